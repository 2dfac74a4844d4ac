"""The sans-I/O client queue: Hypothesis properties against a plain model of what went in.

Under every policy: control messages (and replayed events) are never dropped, the bounds
always hold, every event offered is either taken, still queued or counted as dropped, and
order is kept. A lossy policy overflows only when kept items alone fill the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.server.client_queue import ClientQueue
from adapters.server.framing import Item, count_events
from streams import Event, OverflowPolicy

POLICIES = [OverflowPolicy.DISCONNECT, OverflowPolicy.DROP_OLDEST, OverflowPolicy.LATEST_ONLY]


@dataclass(frozen=True, slots=True)
class Live:
    events: int
    size: int


@dataclass(frozen=True, slots=True)
class Control:
    size: int


@dataclass(frozen=True, slots=True)
class Replayed:
    size: int


@dataclass(frozen=True, slots=True)
class Take:
    pass


@dataclass(frozen=True, slots=True)
class Policy:
    policy: OverflowPolicy


ops = st.lists(
    st.one_of(
        st.builds(Live, st.integers(1, 4), st.integers(1, 300)),
        st.builds(Control, st.integers(1, 300)),
        st.builds(Replayed, st.integers(1, 300)),
        st.just(Take()),
        st.builds(Policy, st.sampled_from(POLICIES)),
    ),
    max_size=80,
)

_counter = iter(range(1 << 62))


def event() -> Event:
    return Event.create(next(_counter), id=f"e{next(_counter)}")


def in_bounds(q: ClientQueue) -> bool:
    return len(q) <= 1 or (len(q) <= q.max_items and q.bytes <= q.max_bytes)


@settings(max_examples=400, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    max_items=st.integers(1, 8),
    max_bytes=st.integers(1, 1200),
    steps=ops,
)
def test_control_messages_are_never_dropped_bounds_hold_and_drops_are_counted(
    policy: OverflowPolicy, max_items: int, max_bytes: int, steps: list[object]
) -> None:
    q = ClientQueue(max_items, max_bytes, policy)
    offered: list[Item] = []  # in order
    kept: list[Item] = []  # control messages and replayed events accepted
    taken: list[Item] = []
    offered_events = 0
    returned_drops = 0
    for step in steps:
        if q.closed:
            break
        before_live = [i for i in q if isinstance(i, tuple)]
        if isinstance(step, Live):
            seg = tuple(event() for _ in range(step.events))
            offered.append(seg)
            offered_events += step.events
            returned_drops += q.offer_live(seg, step.size)
            if q.policy is OverflowPolicy.LATEST_ONLY and not q.closed:
                live = [i for i in q if isinstance(i, tuple)]
                assert len(live) <= 1 and all(len(i) == 1 for i in live)
        elif isinstance(step, Control | Replayed):
            control = b'{"op":"ack","ref":"%d"}' % next(_counter)  # a distinct object
            item: bytes | Event = control if isinstance(step, Control) else event()
            offered_events += count_events(item)
            offered.append(item)
            returned_drops += q.offer_kept(item, step.size)
            if q.overflowed:
                # Only when it could not fit even with every live item gone (or under
                # ``disconnect``, which never drops to make room).
                if q.policy is not OverflowPolicy.DISCONNECT:
                    assert not [i for i in q if isinstance(i, tuple)]
                    assert not q.fits(step.size)
            else:
                kept.append(item)
        elif isinstance(step, Take):
            taken.extend(q.take_all())
        else:
            assert isinstance(step, Policy)
            q.set_policy(step.policy)
        assert in_bounds(q)
        if q.overflowed and q.policy is not OverflowPolicy.DISCONNECT:
            assert not before_live or isinstance(step, Control | Replayed)
        # Every event offered is taken, still queued or counted as dropped.
        queued = list(q)
        assert sum(count_events(i) for i in taken) + q.events + q.dropped == offered_events
        assert q.events == sum(count_events(i) for i in queued)
        assert q.bytes >= 0 and q.live == sum(isinstance(i, tuple) for i in queued)
        assert q.idle == (not queued and not q.closed)
    assert q.idle == (not len(q) and not q.closed)
    assert returned_drops == q.dropped
    # Every kept item arrives, in order; everything delivered was offered, in order.
    delivered = taken + list(q)
    ids = [id(i) for i in delivered]
    assert [id(i) for i in kept] == [x for x in ids if x in {id(k) for k in kept}]
    positions = {id(item): n for n, item in enumerate(offered)}
    latest_only_parts = [x for x in delivered if id(x) not in positions]
    # latest_only may queue the last event of a segment (a new one-event tuple)
    assert all(isinstance(x, tuple) and len(x) == 1 for x in latest_only_parts)
    order = [positions[id(x)] for x in delivered if id(x) in positions]
    assert order == sorted(order)


@pytest.mark.parametrize("policy", POLICIES)
def test_an_ack_behind_a_full_queue_of_live_events_is_kept(policy: OverflowPolicy) -> None:
    """Issue 11 item 3: under drop_oldest an ``ack`` was dropped; now live events make room."""
    q = ClientQueue(max_items=3, max_bytes=10_000, policy=policy)
    for _ in range(3):
        q.offer_live((event(),), 100)
    acks = [f'{{"op":"ack","ref":"p{i}"}}'.encode() for i in range(20)]
    for ack in acks:
        q.offer_kept(ack, len(ack))
        if policy is OverflowPolicy.DISCONNECT:
            break
    if policy is OverflowPolicy.DISCONNECT:
        assert q.overflowed  # the client is disconnected and resumes; nothing is silent
        return
    # Twenty acks do not fit three slots: the lossy queue dropped every live event for
    # them and then overflowed rather than dropping an ack.
    assert q.overflowed and q.dropped == 3
    assert all(isinstance(i, bytes) for i in q)


def test_drop_oldest_drops_only_live_events_and_counts_them() -> None:
    q = ClientQueue(max_items=4, max_bytes=10_000, policy="drop_oldest")
    ack = b'{"op":"ack"}'
    q.offer_live((event(), event()), 100)
    q.offer_kept(ack, len(ack))
    q.offer_live((event(),), 100)
    replayed = event()
    q.offer_kept(replayed, 100)
    assert q.offer_live((event(),), 100) == 2  # the oldest segment, two events
    items = q.take_all()
    assert items[0] is ack and items[2] is replayed and q.dropped == 2


def test_latest_only_keeps_the_newest_event_and_every_control_message() -> None:
    q = ClientQueue(max_items=100, max_bytes=100_000, policy="latest_only")
    gap = b'{"op":"gap"}'
    q.offer_live((event(),), 10)
    q.offer_kept(gap, len(gap))
    last = event()
    assert q.offer_live((event(), event(), last), 30) == 3
    assert q.take_all() == [gap, (last,)]


def test_offers_after_close_are_ignored() -> None:
    q = ClientQueue(2, 100)
    q.close()
    assert q.offer_live((event(),), 10) == 0 and q.offer_kept(b"{}", 2) == 0 and not len(q)


def test_only_client_policies() -> None:
    with pytest.raises(ValueError):
        ClientQueue(policy="block")
    with pytest.raises(ValueError):
        ClientQueue(max_items=0)


def test_idle_means_empty_and_open() -> None:
    q = ClientQueue(4, 100)
    assert q.idle
    q.offer_kept(b'{"op":"ack"}', 12)
    assert not q.idle
    q.take_all()
    assert q.idle
    q.offer_live((event(),), 10)
    q.close()
    assert not q.idle
    q.take_all()
    assert not q.idle  # closed: nothing more is written straight from the hub

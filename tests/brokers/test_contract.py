"""The broker contract: the same tests, unchanged, against the memory, NATS and Redis brokers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams import (
    Event,
    EventError,
    GapError,
    MemoryBroker,
    Position,
    PositionError,
    Retention,
    SubjectError,
    match,
)

from .conftest import Collector, build, dispose

pytestmark = pytest.mark.broker

SUBJECTS = ["chat.lobby.msg", "chat.dev.msg", "chat.lobby.join", "sensor.t1", "chat"]
PATTERNS = ["chat.*.msg", "chat.>", "sensor.*", "chat", ">", "chat.lobby.msg", "nothing.here"]


async def publish_all(broker: Any, items: list[tuple[str, Any]]) -> list[Position]:
    return [await broker.apublish(subject, data) for subject, data in items]


async def wipe(broker: Any) -> None:
    """Lose all history the way each broker can: a purge or the stream vanishing."""
    if isinstance(broker, MemoryBroker):
        broker.purge()
    else:
        await broker.drop()


async def test_positions_increase_and_events_carry_them(broker: Any) -> None:
    first = await broker.apublish("chat.lobby.msg", {"n": 0})
    sub = Collector(broker.subscribe(">", since=first))
    positions = await publish_all(broker, [("chat.lobby.msg", {"n": i}) for i in range(1, 31)])
    events = await sub.count(30)
    assert positions == sorted(positions) and len(set(positions)) == 30
    assert all(p.epoch == first.epoch and p > first for p in positions)
    assert [e.sequence for e in events] == [str(p) for p in positions]
    assert [e.data["n"] for e in events] == list(range(1, 31))
    assert all(e.subject == "chat.lobby.msg" for e in events)
    assert broker.epoch == first.epoch


@pytest.mark.parametrize("pattern", PATTERNS)
async def test_pattern_selects_exactly_the_matching_subjects(broker: Any, pattern: str) -> None:
    start = await broker.apublish("start", None)
    items = [(SUBJECTS[i % len(SUBJECTS)], {"n": i}) for i in range(25)]
    sub = Collector(broker.subscribe(pattern, since=start))
    every = Collector(broker.subscribe(">", since=start))
    await publish_all(broker, items)
    await every.count(25)  # everything has been delivered somewhere: the pattern had its chance
    expected = [(s, d) for s, d in items if match(pattern, s)]
    await sub.count(len(expected))
    await asyncio.sleep(0)
    assert [(e.subject, e.data) for e in sub.events] == expected


async def test_replay_then_live_without_loss_or_duplicates(broker: Any) -> None:
    positions = await publish_all(broker, [("a.b", i) for i in range(20)])
    sub = Collector(broker.subscribe("a.>", since=positions[9]))
    # Publish while the replay is (possibly) still running.
    await publish_all(broker, [("a.c", i) for i in range(20, 40)])
    events = await sub.count(30)
    every = Collector(broker.subscribe(">", since=positions[-1]))
    await broker.apublish("a.d", 40)  # a marker: once seen here, sub has had its chance too
    await every.count(1)
    await sub.count(31)
    assert [e.data for e in events] == list(range(10, 41))
    assert len({e.sequence for e in events}) == 31


async def test_live_subscription_starts_now(broker: Any) -> None:
    await publish_all(broker, [("old.x", "before") for _ in range(3)])
    sub = Collector(broker.subscribe("live.>"))
    # The subscription becomes live at some point after subscribe(): probe until it is.
    probes = 0
    while not sub.events:
        await broker.apublish("live.probe", probes)
        probes += 1
        await asyncio.sleep(0.01 * min(probes, 10))
    seen_probes = len(sub.events)
    await publish_all(broker, [("live.msg", i) for i in range(10)])
    await sub.count(seen_probes + 10)
    await asyncio.sleep(0.05)  # let anything wrong (a replay of old events) arrive too
    assert all(e.subject != "old.x" for e in sub.events)
    assert [e.data for e in sub.events[seen_probes:]] == list(range(10))
    probe_data = [e.data for e in sub.events[:seen_probes]]
    assert probe_data == sorted(set(probe_data))  # probes in order, none twice


async def test_gap_when_retention_evicted_events_after_since(make_broker: Any) -> None:
    broker = make_broker(Retention(max_events=5, max_bytes=None, max_per_subject=None))
    positions = await publish_all(broker, [("a.b", i) for i in range(10)])
    gap = await Collector(broker.subscribe("a.>", since=positions[0])).failure()
    assert isinstance(gap, GapError)
    assert gap.reason == "events were evicted"
    assert gap.requested == positions[0]
    # Brokers may evict in batches: the earliest retained is one of the last five.
    assert gap.earliest in positions[5:]
    kept = positions.index(gap.earliest)
    resumed = Collector(broker.subscribe("a.>", since=gap.resume_from))
    assert [e.data for e in await resumed.count(10 - kept)] == list(range(kept, 10))


async def test_no_gap_when_only_events_up_to_since_were_evicted(make_broker: Any) -> None:
    broker = make_broker(Retention(max_events=5, max_bytes=None, max_per_subject=None))
    positions = await publish_all(broker, [("a.b", i) for i in range(10)])
    gap = await Collector(broker.subscribe("a.>", since=positions[0])).failure()
    assert isinstance(gap, GapError) and gap.earliest is not None
    kept = positions.index(gap.earliest)
    since = positions[kept - 1]  # evicted itself, but nothing after it was
    sub = Collector(broker.subscribe("a.>", since=since))
    assert [e.data for e in await sub.count(10 - kept)] == list(range(kept, 10))
    await broker.apublish("a.b", 10)
    assert [e.data for e in await sub.count(11 - kept)] == list(range(kept, 11))
    assert sub.error is None


async def test_gap_when_the_epoch_changed(broker: Any) -> None:
    old = await broker.apublish("a.b", "old")
    await wipe(broker)
    new = await broker.apublish("a.b", "new")
    assert new.epoch != old.epoch
    gap = await Collector(broker.subscribe("a.>", since=old)).failure()
    assert isinstance(gap, GapError)
    assert gap.reason == "epoch changed (history lost)"
    assert gap.earliest == new
    resumed = Collector(broker.subscribe("a.>", since=gap.resume_from))
    assert [e.data for e in await resumed.count(1)] == ["new"]


async def test_gap_for_an_unknown_epoch_or_a_position_ahead(broker: Any) -> None:
    pos = await broker.apublish("a.b", 1)
    gap = await Collector(broker.subscribe(">", since=Position("feedbeef", 1))).failure()
    assert isinstance(gap, GapError) and gap.earliest == pos
    ahead = Position(pos.epoch, pos.offset + 1_000_000)
    gap = await Collector(broker.subscribe(">", since=str(ahead))).failure()
    assert isinstance(gap, GapError) and gap.reason == "position is ahead of the log"
    assert gap.earliest == pos


@pytest.mark.parametrize("since", ["unknown epoch", "ahead"])
async def test_resuming_after_a_gap_continues_without_another_gap(broker: Any, since: str) -> None:
    pos = await broker.apublish("a.b", 1)
    bad = (
        Position("feedbeef", 1)
        if since == "unknown epoch"
        else pos._replace(offset=pos.offset + 10**6)
    )
    gap = await Collector(broker.subscribe(">", since=bad)).failure()
    assert isinstance(gap, GapError) and gap.resume_from is not None
    assert gap.resume_from < pos  # history is complete from there: nothing retained is skipped
    resumed = Collector(broker.subscribe(">", since=gap.resume_from))
    await broker.apublish("a.b", 2)
    assert [e.data for e in await resumed.count(2)] == [1, 2]
    assert resumed.error is None


async def test_a_batch_is_stored_contiguously_and_delivered_in_order(broker: Any) -> None:
    start = await broker.apublish("a.start", 0)
    sub = Collector(broker.subscribe(">", since=start))
    ids = [Event.create({"n": i}) for i in range(50)]
    positions = await broker.apublish_many("a.b", [*ids[:25], *[{"n": i} for i in range(25, 50)]])
    assert len(positions) == 50 and positions == sorted(set(positions))
    assert all(p.epoch == start.epoch and p > start for p in positions)
    end = await broker.apublish("a.end", 51)
    events = await sub.count(51)
    assert [e.data for e in events] == [{"n": i} for i in range(50)] + [51]
    assert [e.sequence for e in events[:50]] == [str(p) for p in positions]
    assert [e.id for e in events[:25]] == [e.id for e in ids[:25]]
    assert all(e.subject == "a.b" for e in events[:50]) and events[50].sequence == str(end)
    assert await broker.apublish_many("a.b", []) == []
    if isinstance(broker, MemoryBroker):  # one log, one writer: offsets are consecutive
        assert [p.offset for p in positions] == list(range(start.offset + 1, end.offset))


async def test_a_batch_with_an_unencodable_event_stores_nothing(
    make_broker: Any, kind: str
) -> None:
    # Bounding bytes makes the memory broker encode (and so check) every event too;
    # Redis refuses max_bytes (it cannot enforce it) and encodes every event anyway.
    max_bytes = None if kind == "redis" else 1 << 30
    broker = make_broker(Retention(max_events=None, max_bytes=max_bytes, max_per_subject=None))
    start = await broker.apublish("a.start", 0)
    with pytest.raises(EventError, match="not JSON-serializable"):
        await broker.apublish_many("a.b", [{"n": 1}, {"n": object()}, {"n": 3}])
    sub = Collector(broker.subscribe(">", since=start))
    await broker.apublish("a.end", "end")
    assert [e.data for e in await sub.count(1)] == ["end"]


@pytest.mark.parametrize("how", ["apublish", "apublish_many"])
async def test_a_publish_right_after_a_live_subscribe_is_delivered(
    broker: Any, kind: str, how: str
) -> None:
    await broker.apublish("warm.up", 0)  # this instance has talked to its server before
    for i in range(20):
        sub = Collector(broker.subscribe(f"race{i}.>"))
        sent = [i] if how == "apublish" else [i, -i]
        if how == "apublish":
            await broker.apublish(f"race{i}.x", i)
        else:
            await broker.apublish_many(f"race{i}.x", sent)
        assert [e.data for e in await sub.count(len(sent))] == sent
        sub.disposable.dispose()


async def test_a_fresh_broker_delivers_a_publish_right_after_a_live_subscribe(kind: str) -> None:
    stream: dict[str, Any] = {}
    for i in range(5):  # each broker instance is new: it has never asked its server anything
        broker = build(kind, **stream)
        if kind != "memory":
            stream = {"stream": broker.stream}
        try:
            sub = Collector(broker.subscribe("race.>"))
            await broker.apublish("race.x", i)
            assert [e.data for e in await sub.count(1)] == [i]
        finally:
            if i < 4:
                await broker.close()
            else:
                await dispose(broker)


async def test_bad_subjects_patterns_and_positions_are_refused(broker: Any) -> None:
    for subject in ["", "a..b", "a.*", "a.>", "a b"]:
        with pytest.raises(SubjectError):
            await broker.apublish(subject, 1)
    for pattern in ["", "a.>.b", "a..b"]:
        with pytest.raises(SubjectError):
            broker.subscribe(pattern)
    for since in ["nonsense", "abc-", "-12", "e-1x"]:
        with pytest.raises(PositionError):
            broker.subscribe(">", since=since)


async def test_close_completes_subscribers(broker: Any) -> None:
    start = await broker.apublish("a.b", 0)
    sub = Collector(broker.subscribe(">", since=start))
    await broker.apublish("a.b", 1)
    await sub.count(1)
    await broker.close()
    await sub.until(lambda c: c.completed)
    assert sub.error is None


async def test_a_failing_subscriber_harms_nobody_else(broker: Any) -> None:
    start = await broker.apublish("a.b", 0)

    def explode(_: Any) -> None:
        raise RuntimeError("consumer bug")

    errors: list[BaseException] = []
    failed = asyncio.Event()

    def on_error(exc: BaseException) -> None:
        errors.append(exc)
        failed.set()

    broker.subscribe(">", since=start).subscribe(explode, on_error)
    good = Collector(broker.subscribe(">", since=start))
    await publish_all(broker, [("a.b", i) for i in range(1, 6)])
    assert [e.data for e in await good.count(5)] == [1, 2, 3, 4, 5]
    # The two subscriptions run independently: wait for the faulty one's own signal.
    await asyncio.wait_for(failed.wait(), 20)
    assert len(errors) == 1 and "consumer bug" in str(errors[0])
    assert good.error is None and not good.completed

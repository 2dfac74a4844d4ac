"""Holes in the middle of the log: NATS's per-subject limit deletes a busy subject's old
messages wherever they lie, and a subscriber resuming before them must hear of it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops

from adapters.brokers.positions import last_hole
from streams import Event, GapError, Position, Retention

from .conftest import Collector, build, dispose

GUARD = 20.0  # turns a hang into a failure; never a timed assertion
LIMIT = 3
PER_SUBJECT = Retention(max_events=None, max_bytes=None, max_age=None, max_per_subject=LIMIT)


@pytest.fixture
async def log() -> AsyncIterator[tuple[Any, Position, list[Position]]]:
    """One quiet event (offset 1), then ten busy ones (2..11): the limit deletes 2..8."""
    broker = build("nats", PER_SUBJECT)
    try:
        quiet = await broker.apublish("q.quiet", {"n": -1})
        busy = [await broker.apublish("q.busy", {"n": i}) for i in range(10)]
        yield broker, quiet, busy
    finally:
        await dispose(broker)


async def replay_then_marker(
    broker: Any, since: Position, expect: list[Any], marker: str = "end"
) -> None:
    """Subscribing to ``>`` after ``since`` replays exactly ``expect`` (the events' ``n``),
    then ``marker`` published afterwards, with no gap on the way."""
    sub = Collector(broker.subscribe(">", since=since))
    await sub.count(len(expect))
    await broker.apublish("q.end", {"n": marker})
    events = await sub.count(len(expect) + 1)
    assert sub.error is None
    assert [e.data["n"] for e in events] == [*expect, marker]
    sub.disposable.dispose()


@pytest.mark.broker
async def test_resuming_before_deleted_events_reports_the_gap_past_the_last_hole(
    log: tuple[Any, Position, list[Position]],
) -> None:
    broker, quiet, busy = log
    assert [p.offset for p in busy] == list(range(2, 12))
    resume: list[Position | None] = []
    for pattern in (">", "q.busy", "q.*"):
        gap = await Collector(broker.subscribe(pattern, since=quiet)).failure()
        assert isinstance(gap, GapError), gap
        assert gap.reason == "events were evicted"
        assert gap.earliest == busy[7]  # just after the last deleted (offset 8)
        resume.append(gap.resume_from)
    assert resume == [busy[6]] * 3
    await replay_then_marker(broker, busy[6], [7, 8, 9])


@pytest.mark.broker
async def test_resuming_after_the_deletions_reports_no_gap(
    log: tuple[Any, Position, list[Position]],
) -> None:
    broker, _, busy = log
    await replay_then_marker(broker, busy[6], [7, 8, 9], "m1")  # since = the last deleted
    await replay_then_marker(broker, busy[7], [8, 9, "m1"], "m2")


@pytest.mark.broker
async def test_a_quiet_subject_is_not_blamed_for_a_busy_subjects_deletions(
    log: tuple[Any, Position, list[Position]],
) -> None:
    broker, quiet, _ = log
    before = Position(quiet.epoch, 0)
    sub = Collector(broker.subscribe("q.quiet", since=before))
    await sub.count(1)
    await broker.apublish("q.quiet", {"n": -2})
    events = await sub.count(2)
    assert sub.error is None
    assert [e.data["n"] for e in events] == [-1, -2]
    sub.disposable.dispose()


# -- the sans-I/O rule against a simulated per-subject-limited log -------------------------

logs = st.lists(st.sampled_from("abc"), max_size=40)


def simulate(subjects: list[str], limit: int) -> tuple[dict[int, str], dict[int, str]]:
    """Offsets 1.. of ``subjects`` under a per-subject limit: (retained, deleted)."""
    retained: dict[int, str] = {}
    deleted: dict[int, str] = {}
    for offset, subject in enumerate(subjects, start=1):
        retained[offset] = subject
        mine = [o for o, s in retained.items() if s == subject]
        if len(mine) > limit:
            deleted[mine[0]] = retained.pop(mine[0])
    return retained, deleted


def hole_for(
    since: int, retained: dict[int, str], deleted: dict[int, str], limit: int, pick: set[str]
) -> int | None:
    """What NatsBroker computes: the bound is the newest first retained offset among the
    picked subjects at the limit."""
    full = {s for s in pick if sum(1 for v in retained.values() if v == s) >= limit}
    firsts = [min(o for o, v in retained.items() if v == s) for s in full]
    return last_hole(since, deleted, max(firsts, default=0))


@given(logs, st.integers(1, 4), st.sets(st.sampled_from("abc"), min_size=1), st.integers(0, 41))
def test_last_hole_never_misses_a_matching_deletion_and_is_stable(
    subjects: list[str], limit: int, pick: set[str], since: int
) -> None:
    retained, deleted = simulate(subjects, limit)
    since = min(since, len(subjects))
    hole = hole_for(since, retained, deleted, limit, pick)
    lost = [o for o, s in deleted.items() if s in pick and o > since]
    if lost:
        assert hole is not None and hole >= max(lost)  # reported, and resuming skips them
    if hole is not None:
        assert hole in deleted and hole > since
        assert hole_for(hole, retained, deleted, limit, pick) is None  # no second gap


# -- deletions while a subscription is already reading past its position ----------------

BACKLOG = 6000  # x 2 KB: more than the server sends before waiting on flow control
FILLER = "x" * 2000


async def store_backlog(url: str, stream: str) -> None:
    """``q.f.<i>`` (a subject each, so none reaches the limit), pipelined with nats-py."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        acks = [
            await js.publish_async(f"{stream}.q.f.{i}", orjson.dumps({"n": i, "pad": FILLER}))
            for i in range(BACKLOG)
        ]
        await asyncio.wait_for(asyncio.gather(*acks), GUARD)
    finally:
        await nc.close()


def publish_elsewhere(url: str, stream: str, subjects: list[str]) -> None:
    """Another process's producer (plain nats-py, in a thread with its own loop)."""

    async def run() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            for subject in subjects:
                await js.publish(f"{stream}.{subject}", orjson.dumps({"n": subject}))
        finally:
            await nc.close()

    asyncio.run(run())


@pytest.mark.broker
async def test_a_per_subject_limit_deleting_ahead_of_a_reading_subscriber_is_a_gap() -> None:
    """Three subscribers replay a long backlog; once each has its first event, the event
    loop stalls (so the server waits on flow control, far behind them) while another
    producer stores two more ``q.a`` messages: the limit of 2 deletes the two at the
    backlog's end before any subscriber reached them. ``>`` and ``q.>`` fail with a gap
    right after the backlog, with nothing later emitted first; ``q.f.>`` lost nothing
    and reads on; resuming from the gap continues without another."""
    broker = build("nats", Retention(None, None, None, max_per_subject=2))
    try:
        await broker.connect()
        await store_backlog(broker.url, broker.stream)
        a1 = await broker.apublish("q.a", {"n": "a1"})
        a2 = await broker.apublish("q.a", {"n": "a2"})
        end = a2.offset + 4  # after q.a 3, q.a 4, q.f.end1: q.f.end2
        started: list[int] = []
        later = threading.Thread(
            target=publish_elsewhere,
            args=(broker.url, broker.stream, ["q.a", "q.a", "q.f.end1", "q.f.end2"]),
        )

        def stall_once_all_started(pattern: str) -> Callable[[Event], None]:
            def on_first(_: Event) -> None:
                if pattern not in started:
                    started.append(pattern)
                    if len(started) == 3:
                        later.start()
                        later.join(GUARD)  # blocks the loop: nothing read or answered

            return on_first

        lookups: list[int] = []  # the deleted-sequence look-ups made while reading
        holes = broker._holes

        async def counted(pattern: str, covers: int = 0) -> Any:
            if covers:
                lookups.append(covers)
            return await holes(pattern, covers)

        broker._holes = counted  # type: ignore[method-assign]
        since = Position(a1.epoch, 0)
        subs = {
            pattern: Collector(
                broker.subscribe(pattern, since=since).pipe(
                    ops.do_action(on_next=stall_once_all_started(pattern))
                )
            )
            for pattern in (">", "q.>", "q.f.>")
        }
        for pattern in (">", "q.>"):
            gap = await subs[pattern].failure()
            assert isinstance(gap, GapError), gap
            assert gap.reason == "events were evicted"
            assert gap.requested == Position(a1.epoch, a1.offset - 1)  # the backlog's last
            assert gap.earliest == Position(a1.epoch, a2.offset + 1)  # the first q.a kept
            assert len(subs[pattern].events) == BACKLOG  # nothing after the hole came first
        quiet = await subs["q.f.>"].count(BACKLOG + 2)
        assert [e.data["n"] for e in quiet[-2:]] == ["q.f.end1", "q.f.end2"]
        assert quiet[-1].sequence == f"{a1.epoch}-{end}"
        assert subs["q.f.>"].error is None
        assert len(lookups) == 2  # one by q.> at its jump, one by q.f.> (lagging): no more
        assert gap.resume_from is not None
        await replay_then_marker(broker, gap.resume_from, ["q.a", "q.a", "q.f.end1", "q.f.end2"])
    finally:
        await dispose(broker)

"""Holes in the middle of the log: NATS's per-subject limit deletes a busy subject's old
messages wherever they lie, and a subscriber resuming before them must hear of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.brokers.positions import last_hole
from streams import GapError, Position, Retention

from .conftest import Collector, build, dispose

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

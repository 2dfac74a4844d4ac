"""Snapshot and restore of every stateful operator, and leading-edge batching.

The contract, per operator: run a prefix of random input, ``snapshot()``, JSON round trip,
build a fresh pipeline on *another* clock (a second ``TestScheduler`` started ``OFF``
seconds later, as a new process would have), ``restore()``, run the suffix: the outputs
(with their times) are those of one uninterrupted run.

Times are chosen so that a timer never ties with an event (events on whole seconds,
durations ending in .37, cuts at .5): a tie would be ordered by scheduling order, which a
restore changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from operators import (
    batch,
    batch_by_key,
    count_of,
    debounce,
    dedupe,
    group_by_key,
    interval_join,
    join_window,
    rate_limit,
    sample,
    session,
    sliding,
    throttle,
    tumbling,
)
from operators._snapshot import SnapshotError
from operators.state import StageSetError, collecting, restore_all, snapshot_all
from operators.windows import Window
from streams import Event

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed
OFF = 1000.0
Build = Callable[[reactivex.Observable[Any], TestScheduler], reactivex.Observable[Any]]


def _feed(
    s: TestScheduler, subject: Subject[Any], events: list[tuple[float, Any]], off: float
) -> None:
    for t, v in events:
        s.schedule_absolute(t + off, lambda *_, v=v: subject.on_next(v))


def _recorder(
    out: list[Any], s: TestScheduler, off: float, shift: Callable[[Any, float], Any] | None = None
) -> Callable[[Any], None]:
    if shift is None:
        return lambda v: out.append((round(float(s.clock) - off, 6), v))
    return lambda v: out.append((round(float(s.clock) - off, 6), shift(v, off)))


def whole(build: Build, events: list[tuple[float, Any]], end: float) -> list[Any]:
    """One uninterrupted run; completion at ``end``."""
    s, subject, out = TestScheduler(), Subject[Any](), []
    build(subject, s).subscribe(_recorder(out, s, 0.0), scheduler=s)
    _feed(s, subject, events, 0.0)
    s.advance_to(end)
    subject.on_completed()
    return out


def resumed(
    build: Build,
    events: list[tuple[float, Any]],
    cut: float,
    end: float,
    shift: Callable[[Any, float], Any] | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """The prefix before ``cut``, a snapshot through JSON, the suffix in a fresh pipeline
    on a clock ``OFF`` seconds ahead."""
    s, subject, out = TestScheduler(), Subject[Any](), []
    with collecting() as stages:
        sub = build(subject, s).subscribe(_recorder(out, s, 0.0), scheduler=s)
    _feed(s, subject, [e for e in events if e[0] < cut], 0.0)
    s.advance_to(cut)
    raw = snapshot_all(stages)
    snap = orjson.loads(orjson.dumps(raw))
    assert snap == raw  # JSON-able as it is: nothing turns into something else on the way
    sub.dispose()
    s2, subject2 = TestScheduler(), Subject[Any]()
    s2.advance_to(cut + OFF)
    with collecting() as stages2:
        build(subject2, s2).subscribe(_recorder(out, s2, OFF, shift), scheduler=s2)
    restore_all(stages2, snap)
    _feed(s2, subject2, [e for e in events if e[0] >= cut], OFF)
    s2.advance_to(end + OFF)
    subject2.on_completed()
    return out, snap


def check(
    build: Build,
    events: list[tuple[float, Any]],
    cut: float,
    end: float = 80.0,
    shift: Callable[[Any, float], Any] | None = None,
) -> None:
    """``shift(value, OFF)`` maps a value emitted on the second clock back to the first's."""
    got, _ = resumed(build, events, cut, end, shift)
    assert got == whole(build, events, end)


times = st.lists(st.integers(0, 60), max_size=40).map(sorted)
cuts = st.integers(0, 61).map(lambda c: c + 0.5)
durations = st.sampled_from([0.37, 1.37, 2.37, 5.37])


def timed(ts: list[int], values: list[Any]) -> list[tuple[float, Any]]:
    return [(float(t), v) for t, v in zip(ts, values, strict=False)]


SMALL = st.integers(0, 5)


@st.composite
def stream(draw: Any, values: st.SearchStrategy[Any] = SMALL) -> Any:
    ts = draw(times)
    return timed(ts, draw(st.lists(values, min_size=len(ts), max_size=len(ts))))


# -- batch / batch_by_key ---------------------------------------------------------------


@given(stream(), cuts, st.none() | st.integers(1, 4), durations, st.booleans())
def test_batch_resumes(events: Any, cut: float, count: Any, within: float, leading: bool) -> None:
    check(lambda o, s: o.pipe(batch(count, within=within, leading=leading, scheduler=s)),
          events, cut)  # fmt: skip


@given(
    stream(),
    cuts,
    st.none() | st.integers(1, 4),
    durations,
    st.booleans(),
    st.none() | st.integers(1, 6),
)
def test_batch_by_key_resumes(
    events: Any, cut: float, count: Any, within: float, leading: bool, nbytes: Any
) -> None:
    def build(o: Any, s: TestScheduler) -> Any:
        return o.pipe(
            batch_by_key(lambda v: v % 3, count, nbytes, within, leading=leading,
                         size=lambda v: v + 1, scheduler=s)
        )  # fmt: skip

    check(build, events, cut)


@given(stream(st.integers(0, 99).map(lambda i: Event.create({"i": i}, subject=f"k.{i % 3}"))), cuts)
def test_batch_by_key_snapshots_events_as_json(events: Any, cut: float) -> None:
    check(lambda o, s: o.pipe(batch_by_key(lambda e: e.subject, within=2.37, scheduler=s)),
          events, cut)  # fmt: skip


def leading_model(
    events: list[tuple[float, Any]], within: float, count: int | None, end: float
) -> list[tuple[float, list[Any]]]:
    """Brute force: the first event of a quiet period goes at once; followers within the
    period are gathered and flushed at its end, which opens the next period."""
    out: list[tuple[float, list[Any]]] = []
    buf: list[Any] = []
    deadline: float | None = None

    def settle(t: float) -> None:
        nonlocal deadline
        while deadline is not None and deadline < t:
            if buf:
                out.append((deadline, buf.copy()))
                buf.clear()
                deadline += within
            else:
                deadline = None

    for t, v in events:
        settle(t)
        if deadline is None:
            out.append((t, [v]))
            deadline = t + within
        else:
            buf.append(v)
            if count is not None and len(buf) >= count:
                out.append((t, buf.copy()))
                buf.clear()
    settle(end)
    if buf:
        out.append((end, buf))
    return [(round(t, 6), b) for t, b in out]


@given(stream(), st.none() | st.integers(1, 4), durations)
def test_leading_batch_matches_model(events: Any, count: Any, within: float) -> None:
    build: Build = lambda o, s: o.pipe(batch(count, within=within, leading=True, scheduler=s))  # noqa: E731
    assert whole(build, events, 80.0) == leading_model(events, within, count, 80.0)


@given(stream(), durations)
def test_leading_batch_by_key_matches_model_per_key(events: Any, within: float) -> None:
    build: Build = lambda o, s: o.pipe(  # noqa: E731
        batch_by_key(lambda v: v % 2, within=within, leading=True, scheduler=s)
    )
    got = whole(build, events, 80.0)
    want = [
        (t, (k, b))
        for k in (0, 1)
        for t, b in leading_model([e for e in events if e[1] % 2 == k], within, None, 80.0)
    ]
    assert sorted(got, key=repr) == sorted(want, key=repr)


def test_leading_batch_marbles() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(
        on_next(210, 1), on_next(212, 2), on_next(213, 3), on_next(230, 4), on_completed(300)
    )
    res = s.start(lambda: xs.pipe(batch(within=5.0, leading=True)))
    # 1 at once; 2 and 3 wait for the period 210-215; 215-220 gathers nothing: quiet; 4 at once
    assert res.messages == [
        on_next(210, [1]),
        on_next(215, [2, 3]),
        on_next(230, [4]),
        on_completed(300),
    ]


def test_leading_batch_by_key_marbles() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(
        on_next(210, "a1"), on_next(211, "b1"), on_next(212, "a2"), on_next(216, "a3"),
        on_completed(300),
    )  # fmt: skip
    res = s.start(lambda: xs.pipe(batch_by_key(lambda x: x[0], within=5.0, leading=True)))
    assert res.messages == [
        on_next(210, ("a", ["a1"])),
        on_next(211, ("b", ["b1"])),
        on_next(215, ("a", ["a2"])),
        on_next(220, ("a", ["a3"])),  # a flush opened the period 215-220
        on_completed(300),
    ]


def test_leading_needs_within() -> None:
    with pytest.raises(ValueError, match="leading=True needs within"):
        batch(count=3, leading=True)


# -- dedupe, rate_limit, throttle, debounce, sample ---------------------------------------


@given(stream(), cuts, durations, st.integers(1, 4))
def test_dedupe_resumes(events: Any, cut: float, ttl: float, max_keys: int) -> None:
    check(lambda o, s: o.pipe(dedupe(ttl=ttl * 3, max_keys=max_keys, scheduler=s)), events, cut)


def test_dedupe_restores_the_row_wise_form_of_earlier_checkpoints() -> None:
    s, subject, out = TestScheduler(), Subject[Any](), []
    with collecting() as stages:
        subject.pipe(dedupe(ttl=10, scheduler=s)).subscribe(out.append)
    old = {"kind": "dedupe", "config": {"ttl": 10, "max_keys": 100_000},
           "seen": [["a", 5.0], [{"$tuple": ["b", 1]}, 7.0]]}  # fmt: skip
    restore_all(stages, {"dedupe-0": old})
    for v in ["a", ("b", 1), "c"]:
        subject.on_next(v)
    assert out == ["c"]
    assert stages["dedupe-0"].snapshot()["keys"] == ["a", {"$tuple": ["b", 1]}, "c"]


@given(stream(), cuts, st.sampled_from([0.37, 1.37]), st.integers(1, 3), st.booleans())
def test_rate_limit_resumes(events: Any, cut: float, rate: float, burst: int, delay: bool) -> None:
    mode = "delay" if delay else "drop"
    check(lambda o, s: o.pipe(rate_limit(rate, burst, mode, scheduler=s)), events, cut)


@given(stream(), cuts, durations, st.booleans())
def test_throttle_resumes(events: Any, cut: float, seconds: float, latest: bool) -> None:
    check(lambda o, s: o.pipe(throttle(seconds, latest, scheduler=s)), events, cut)


@given(stream(), cuts, durations)
def test_debounce_resumes(events: Any, cut: float, seconds: float) -> None:
    check(lambda o, s: o.pipe(debounce(seconds, scheduler=s)), events, cut)


@given(stream(), cuts, durations)
def test_sample_resumes(events: Any, cut: float, seconds: float) -> None:
    check(lambda o, s: o.pipe(sample(seconds, scheduler=s)), events, cut)


# -- windows ------------------------------------------------------------------------------

stamped = st.tuples(st.integers(0, 40), st.sampled_from(["a", "b", ("c", 1)])).map(
    lambda p: {"t": p[0], "k": p[1]}
)
shapes = st.sampled_from(
    [("tumbling", 5.0, 5.0), ("tumbling", 2.2, 2.2), ("sliding", 6.0, 2.0), ("sliding", 0.7, 0.15),
     ("session", 3.0, 3.0), ("session", 1.5, 1.5)]
)  # fmt: skip


def window_op(shape: tuple[str, float, float], **kw: Any) -> Any:
    kind, size, step = shape
    if kind == "tumbling":
        return tumbling(size, **kw)
    if kind == "sliding":
        return sliding(size, step, **kw)
    return session(size, **kw)


@given(stream(stamped), cuts, shapes, st.sampled_from([0.0, 2.0]), st.booleans(), st.booleans())
def test_event_time_windows_resume(
    events: Any, cut: float, shape: Any, lateness: float, keyed: bool, idle: bool
) -> None:
    def build(o: Any, s: TestScheduler) -> Any:
        return o.pipe(
            window_op(shape, timestamp=lambda e: e["t"], lateness=lateness, scheduler=s,
                      key=(lambda e: e["k"]) if keyed else None, idle=3.37 if idle else None)
        )  # fmt: skip

    check(build, events, cut)


@given(stream(stamped), cuts, shapes, st.sampled_from([0.0, 2.0]), st.booleans())
def test_per_key_watermark_windows_resume(
    events: Any, cut: float, shape: Any, lateness: float, idle: bool
) -> None:
    def build(o: Any, s: TestScheduler) -> Any:
        return o.pipe(
            window_op(shape, timestamp=lambda e: e["t"], lateness=lateness, scheduler=s,
                      key=lambda e: e["k"], idle=3.37 if idle else None, watermark="per_key")
        )  # fmt: skip

    check(build, events, cut)


@given(stream(st.sampled_from(["a", "b", "c"])), cuts, st.sampled_from([1.0, 2.5, 5.0]))
def test_processing_time_windows_resume_on_another_clock(
    events: Any, cut: float, size: float
) -> None:
    """Sizes divide ``OFF``, so the other clock's grid lines up with this one's."""
    events = [(t + 0.25, v) for t, v in events]
    for shape in [("tumbling", size, size), ("sliding", size * 2, size), ("session", size, size)]:
        check(lambda o, s, shape=shape: o.pipe(window_op(shape, key=str, scheduler=s)), events, cut,
              shift=lambda w, off: w._replace(start=w.start - off, end=w.end - off))  # fmt: skip


# -- group_by_key -------------------------------------------------------------------------


def flatten_groups(group: Any) -> Any:
    """A group's events as ``(key, event)``, then ``(key, "end")`` when it completes."""
    k = group.key
    return group.events.pipe(ops.map(lambda v: (k, v)), ops.concat(reactivex.of((k, "end"))))


@given(stream(), cuts, st.none() | durations)
def test_group_by_key_resumes(events: Any, cut: float, expire: Any) -> None:
    def build(o: Any, s: TestScheduler) -> Any:
        grouped = o.pipe(group_by_key(lambda v: v % 3, expire_after=expire, scheduler=s))
        return grouped.pipe(ops.flat_map(flatten_groups))

    check(build, events, cut)


limited = st.tuples(st.integers(0, 40), st.sampled_from(["a", "b", ("c", 1)])).map(
    lambda p: {"t": p[0], "k": p[1]}
)


@given(stream(limited), cuts, st.none() | durations, st.sampled_from([0.37, 1.37]), st.booleans())
def test_rate_limits_inside_groups_resume(
    events: Any, cut: float, expire: Any, rate: float, event_time: bool
) -> None:
    """The groups' own pipelines (a rate limit per key, on the clock or on event time, with
    groups expiring or not) carry on after a restore as if never interrupted."""

    def per_key(group: Any) -> Any:
        k = group.key
        at = (lambda e: e["t"]) if event_time else None
        limit = rate_limit(rate, 2, scheduler=group_scheduler[0], timestamp=at)
        return group.pipe(limit, ops.map(lambda e: (k, e["t"])))

    group_scheduler: list[Any] = [None]

    def build(o: Any, s: TestScheduler) -> Any:
        group_scheduler[0] = s
        grouped = o.pipe(group_by_key(lambda e: e["k"], expire_after=expire, scheduler=s))
        return grouped.pipe(ops.flat_map(per_key))

    check(build, events, cut)


def test_a_groups_stages_are_named_by_its_key_and_forgotten_when_it_ends() -> None:
    s, subject = TestScheduler(), Subject[Any]()
    with collecting() as stages:
        grouped = subject.pipe(group_by_key(lambda e: e[0], expire_after=5, scheduler=s))
        grouped.pipe(
            ops.flat_map(lambda g: g.pipe(rate_limit(1, 2, scheduler=s), dedupe(scheduler=s)))
        ).subscribe(scheduler=s)
    subject.on_next(("ada", 1))
    subject.on_next((("r", 2), 1))
    assert list(stages) == [
        "group_by_key-0",
        'group_by_key-0["ada"]/rate_limit-0',
        'group_by_key-0["ada"]/dedupe-0',
        'group_by_key-0[["r",2]]/rate_limit-0',
        'group_by_key-0[["r",2]]/dedupe-0',
    ]
    s.advance_to(6.0)  # both groups expire
    assert list(stages) == ["group_by_key-0"]


def test_a_snapshot_with_state_for_groups_of_another_pipeline_is_refused() -> None:
    subject = Subject[Any]()
    with collecting() as stages:
        subject.pipe(group_by_key(lambda e: e, name="users")).subscribe()
    with pytest.raises(StageSetError):
        restore_all(stages, {"users": stages["users"].snapshot(), 'other["a"]/rate_limit-0': {}})
    snap = {"users": {"kind": "group_by_key", "config": {"expire_after": None},
                      "groups": [["a", 0.0, None]]},
            'users["a"]/rate_limit-0': {}}  # fmt: skip
    with pytest.raises(StageSetError):  # the group's pipeline (nothing) has no such stage
        restore_all(stages, snap)


# -- joins --------------------------------------------------------------------------------

sided = st.tuples(st.sampled_from("LR"), st.integers(0, 30), st.sampled_from("ab")).map(list)


def sides(o: Any) -> tuple[Any, Any]:
    """One input carries both sides: ``[side, time, key]``."""
    return (o.pipe(ops.filter(lambda e: e[0] == "L")), o.pipe(ops.filter(lambda e: e[0] == "R")))


@given(stream(sided), cuts, shapes, st.sampled_from([0.0, 3.0]))
def test_join_window_resumes(events: Any, cut: float, shape: Any, lateness: float) -> None:
    def build(o: Any, s: TestScheduler) -> Any:
        left, right = sides(o)
        return left.pipe(
            join_window(right, key=lambda e: e[2], window=window_op(shape),
                        timestamp=lambda e: e[1], lateness=lateness, scheduler=s)
        )  # fmt: skip

    check(build, events, cut)


@given(stream(sided), cuts, st.integers(-3, 3), st.integers(0, 4), st.booleans())
def test_interval_join_resumes(
    events: Any, cut: float, lower: int, width: int, event_time: bool
) -> None:
    def build(o: Any, s: TestScheduler) -> Any:
        left, right = sides(o)
        return left.pipe(
            interval_join(right, key=lambda e: e[2], lower=lower, upper=lower + width,
                          timestamp=(lambda e: e[1]) if event_time else None, scheduler=s)
        )  # fmt: skip

    check(build, events, cut)


# -- names, stage sets, refusals ----------------------------------------------------------


def subscribed(build: Callable[[Any], Any]) -> tuple[Subject[Any], dict[str, Any], list[Any]]:
    subject, out = Subject[Any](), []
    with collecting() as stages:
        build(subject).subscribe(out.append)
    return subject, stages, out


def test_unnamed_stages_get_distinct_names_in_pipeline_order() -> None:
    def build(o: Any) -> Any:
        return o.pipe(
            dedupe(ttl=5), ops.map(lambda x: x), dedupe(ttl=9), batch(count=2),
            tumbling(5, timestamp=float, name="per-5s"), batch(count=3),
        )  # fmt: skip

    _, stages, _ = subscribed(build)
    assert list(stages) == ["dedupe-0", "dedupe-1", "batch-0", "per-5s", "batch-1"]
    assert stages["dedupe-0"].snapshot()["config"]["ttl"] == 5
    assert stages["dedupe-1"].snapshot()["config"]["ttl"] == 9
    _, again, _ = subscribed(build)  # the same pipeline built again: the same names
    assert list(again) == list(stages)


def test_outside_a_collection_nothing_registers() -> None:
    out: list[Any] = []
    subject = Subject[Any]()
    subject.pipe(dedupe(), batch(count=2)).subscribe(out.append)
    for x in [1, 1, 2]:
        subject.on_next(x)
    assert out == [[1, 2]]


def test_restore_into_a_different_stage_set_fails_clearly() -> None:
    subject, stages, _ = subscribed(lambda o: o.pipe(dedupe(), batch(count=5)))
    subject.on_next(1)
    snap = snapshot_all(stages)
    _, other, _ = subscribed(lambda o: o.pipe(dedupe(), debounce(1.0)))
    with pytest.raises(StageSetError, match=r"no state for \['debounce-0'\].*\['batch-0'\]"):
        restore_all(other, snap)


def test_restore_refuses_another_kind_or_configuration() -> None:
    subject, stages, _ = subscribed(lambda o: o.pipe(batch(count=5, name="b")))
    subject.on_next(1)
    snap = snapshot_all(stages)
    _, kind, _ = subscribed(lambda o: o.pipe(dedupe(name="b")))
    with pytest.raises(SnapshotError, match="stage 'b' is a dedupe; the snapshot is of a batch"):
        restore_all(kind, snap)
    _, config, _ = subscribed(lambda o: o.pipe(batch(count=7, name="b")))
    with pytest.raises(SnapshotError, match=r"'count': 7.*'count': 5"):
        restore_all(config, snap)


class Opaque:
    pass


def test_items_that_are_neither_events_nor_json_are_refused_at_snapshot() -> None:
    subject, stages, _ = subscribed(lambda o: o.pipe(batch(count=5, name="held")))
    subject.on_next(Opaque())
    with pytest.raises(SnapshotError, match="stage 'held': cannot snapshot a Opaque"):
        snapshot_all(stages)


def test_tuple_keys_and_events_survive_json() -> None:
    subject, stages, _ = subscribed(
        lambda o: o.pipe(batch_by_key(lambda e: (e.subject, 1), count=2))
    )
    first, second = Event.create({"n": 1}, subject="a"), Event.create({"n": 2}, subject="a")
    subject.on_next(first)
    snap = orjson.loads(orjson.dumps(snapshot_all(stages)))
    subject2, stages2, out2 = subscribed(
        lambda o: o.pipe(batch_by_key(lambda e: (e.subject, 1), count=2))
    )
    restore_all(stages2, snap)
    subject2.on_next(second)
    assert out2 == [(("a", 1), [first, second])]


def test_library_operators_in_the_keyed_worker_pipeline() -> None:
    from adapters.brokers.stateful_worker import PartitionPipeline

    def pipeline(o: Any) -> Any:
        return o.pipe(dedupe(lambda e: e.data["id"]), tumbling(10, timestamp=lambda e: e.data["t"],
                      agg=count_of()))  # fmt: skip

    def ev(i: int, t: int) -> Event:
        return Event.create({"id": i, "t": t})

    p = PartitionPipeline(pipeline)
    assert p.feed(ev(1, 1)) == [] and p.feed(ev(1, 2)) == []
    q = PartitionPipeline(pipeline)
    q.restore(orjson.loads(orjson.dumps(p.snapshot())))
    assert q.feed(ev(1, 3)) == []  # still a duplicate
    assert q.feed(ev(2, 12)) == [Window(None, 0.0, 10.0, 1)]

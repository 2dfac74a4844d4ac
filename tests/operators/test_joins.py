"""Joins against brute-force models, marbles with two input lanes, policies and completion.

Both inputs are ``Subject``s fed in one interleaved order; the output each event causes is
one step (windows closing in one step compared in a canonical order). The models:

- window join: an event goes into each of its key's windows still open (end > watermark),
  else it is late; the watermark is the smaller of the two sides' largest timestamps minus
  ``lateness``; a closing window emits every (left, right) pair it holds, if any.
- interval join: every pair of non-late events (``t >= watermark`` on arrival) with equal
  keys and ``left + lower <= right <= left + upper``, emitted when the second arrives,
  with no state expiry at all (so expiry losing a pair would show).
- lookup: the latest table value for the key when the event arrives.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from adapters.notebook import marble
from operators import (
    Late,
    Window,
    enrich,
    interval_join,
    join_window,
    lookup,
    session,
    sliding,
    tumbling,
)

on_next, on_completed, on_error = (
    ReactiveTest.on_next,
    ReactiveTest.on_completed,
    ReactiveTest.on_error,
)
Ev = tuple[int, str, float]  # (side, key, time); side 0 = left (the source), 1 = right


def key_of(e: Ev) -> str:
    return e[1]


def time_of(e: Ev) -> float:
    return e[2]


def canonical(items: list[Any]) -> list[Any]:
    fixed = [w._replace(value=sorted(w.value)) if isinstance(w, Window) else w for w in items]
    return sorted(fixed, key=repr)


def steps(events: list[Ev], make: Any) -> list[list[Any]]:
    left: Subject[Any] = Subject()
    right: Subject[Any] = Subject()
    out: list[Any] = []
    left.pipe(make(right)).subscribe(out.append)
    result = []
    for e in events:
        (left if e[0] == 0 else right).on_next(e)
        result.append(canonical(out))
        out.clear()
    left.on_completed()
    right.on_completed()
    result.append(canonical(out))
    return result


# -- window join ---------------------------------------------------------------------------


def model_join_windows(
    events: list[Ev], kind: str, size: float, step: float, lateness: float
) -> list[list[Any]]:
    highest, wm = [-math.inf, -math.inf], -math.inf
    fs, fz = Fraction(repr(step)), Fraction(repr(size))
    panes: dict[tuple[str, int], list[Ev]] = {}
    sessions: dict[str, list[list[Ev]]] = {}
    result: list[list[Any]] = []

    def window(key: str, start: float, end: float, items: list[Ev]) -> list[Window]:
        pairs = [(a, b) for a in items if a[0] == 0 for b in items if b[0] == 1]
        return [Window(key, start, end, pairs)] if pairs else []

    def close(upto: float) -> list[Any]:
        out: list[Any] = []
        for key, k in [p for p in panes if float(fs * p[1] + fz) <= upto]:
            out += window(key, float(fs * k), float(fs * k + fz), panes.pop((key, k)))
        for key, mine in sessions.items():
            for s in [s for s in mine if max(e[2] for e in s) + size <= upto]:
                mine.remove(s)
                ts = [e[2] for e in s]
                out += window(key, min(ts), max(ts) + size, s)
        return out

    for e in events:
        side, key, t = e
        placed = False
        if kind == "session":
            mine = sessions.setdefault(key, [])
            near = [s for s in mine if any(abs(t - u[2]) < size for u in s)]
            if near or t + size > wm:
                for s in near:
                    mine.remove(s)
                mine.append([x for s in near for x in s] + [e])
                placed = True
        else:
            around = math.floor(t / step)
            for k in range(around - math.ceil(size / step) - 2, around + 3):
                if float(fs * k) <= t < float(fs * k + fz) and float(fs * k + fz) > wm:
                    panes.setdefault((key, k), []).append(e)
                    placed = True
        step_out: list[Any] = [] if placed else [Late(e)]
        highest[side] = max(highest[side], t)
        wm = max(wm, min(highest) - lateness)
        result.append(canonical(step_out + close(wm)))
    result.append(canonical(close(math.inf)))
    return result


times = st.one_of(st.integers(0, 40).map(float), st.floats(0, 20).map(lambda x: round(x, 1)))
events = st.lists(st.tuples(st.sampled_from([0, 1]), st.sampled_from("ab"), times), max_size=30)
SHAPES = [("tumbling", 10.0, 10.0), ("sliding", 10.0, 5.0), ("sliding", 0.7, 0.15),
          ("tumbling", 2.2, 2.2), ("session", 3.0, 3.0), ("session", 1.1, 1.1)]  # fmt: skip


def shape_op(kind: str, size: float, step: float) -> Any:
    if kind == "tumbling":
        return tumbling(size)
    return sliding(size, step) if kind == "sliding" else session(size)


@given(events, st.sampled_from(SHAPES), st.sampled_from([0.0, 2.0]))
def test_join_window_matches_the_model(evs: list[Ev], shape: Any, lateness: float) -> None:
    kind, size, step = shape

    def make(right: Any) -> Any:
        return join_window(right, key=key_of, window=shape_op(kind, size, step),
                           timestamp=time_of, lateness=lateness)  # fmt: skip

    assert steps(evs, make) == model_join_windows(evs, kind, size, step, lateness)


# -- interval join -------------------------------------------------------------------------


def model_interval(events: list[Ev], lower: float, upper: float, lateness: float) -> list[Any]:
    highest, wm = [-math.inf, -math.inf], -math.inf
    kept: list[Ev] = []
    result: list[list[Any]] = []
    for e in events:
        side, key, t = e
        out: list[Any] = []
        if t < wm:
            out.append(Late(e))
        else:
            for o in kept:
                if o[0] != side and o[1] == key:
                    a, b = (e, o) if side == 0 else (o, e)
                    if a[2] + lower <= b[2] <= a[2] + upper:
                        out.append((a, b))
            kept.append(e)
        highest[side] = max(highest[side], t)
        wm = max(wm, min(highest) - lateness)
        result.append(canonical(out))
    result.append([])
    return result


@given(events, st.sampled_from([(0, 5), (-3, 3), (-2, 0), (1, 1), (-0.5, 2.5)]),
       st.sampled_from([0.0, 1.0, 4.0]))  # fmt: skip
def test_interval_join_matches_the_model(evs: list[Ev], bounds: Any, lateness: float) -> None:
    lower, upper = bounds

    def make(right: Any) -> Any:
        return interval_join(right, key=key_of, lower=lower, upper=upper, timestamp=time_of,
                             lateness=lateness)  # fmt: skip

    assert steps(evs, make) == model_interval(evs, lower, upper, lateness)


# -- lookup --------------------------------------------------------------------------------


rows = st.lists(
    st.one_of(
        st.tuples(st.just(0), st.sampled_from("abc"), st.integers(0, 9)),
        st.tuples(st.just(1), st.sampled_from("abc"), st.one_of(st.none(), st.integers(0, 9))),
    ),
    max_size=30,
)


@given(rows, st.sampled_from(["inner", "left"]))
def test_lookup_matches_a_dict(evs: list[Any], how: str) -> None:
    table: dict[str, int] = {}
    want: list[Any] = []
    for e in evs:
        if e[0] == 1:
            if e[2] is None:
                table.pop(e[1], None)
            else:
                table[e[1]] = e[2]
        elif e[1] in table or how == "left":
            want.append((e, table.get(e[1])))
    left: Subject[Any] = Subject()
    right: Subject[Any] = Subject()
    got: list[Any] = []
    op = lookup(right, key=key_of, value=lambda r: r[2], how=how)  # type: ignore[arg-type]
    left.pipe(op).subscribe(got.append)
    for e in evs:
        (left if e[0] == 0 else right).on_next(e)
    assert got == want


def test_enrich_merges_and_follows_the_policy() -> None:
    dead: list[Any] = []
    table = Subject[Any]()
    left: Subject[Any] = Subject()
    got: list[Any] = []
    op = enrich(
        table, key=lambda m: m["u"], table_key=lambda r: r[0], value=lambda r: r[1],
        merge=lambda m, v: {**m, "n": 10 // v}, on_error=lambda e, x: dead.append(e),
    )  # fmt: skip
    errors: list[Exception] = []
    left.pipe(op).subscribe(got.append, errors.append)
    table.on_next(("a", 2))
    table.on_next(("b", 0))
    left.on_next({"u": "a"})
    left.on_next({"u": "b"})  # merge raises: dead letter
    left.on_next({"x": 1})  # key raises: dead letter
    assert got == [{"u": "a", "n": 5}] and dead == [{"u": "b"}, {"x": 1}]
    boom = RuntimeError("table gone")
    table.on_error(boom)  # the table's error ends the stream
    left.on_next({"u": "a"})
    assert errors == [boom] and len(got) == 1


def test_lookup_completes_with_its_source_not_with_the_table() -> None:
    s = TestScheduler()
    table = s.create_hot_observable(on_next(201, ("a", 1)), on_completed(202))
    xs = s.create_hot_observable(on_next(205, "a"), on_next(206, "b"), on_completed(210))
    res = s.start(lambda: xs.pipe(lookup(table, key=str, table_key=lambda r: r[0],
                                         value=lambda r: r[1], how="left")))  # fmt: skip
    assert res.messages == [on_next(205, ("a", 1)), on_next(206, ("b", None)), on_completed(210)]
    assert [(x.subscribe, x.unsubscribe) for x in table.subscriptions] == [(200, 202)]


# -- two-stream completion, errors, policies, marbles ----------------------------------------


def test_two_stream_joins_complete_when_both_sides_have() -> None:
    s = TestScheduler()
    right = s.create_hot_observable(on_next(202, ("r", 1.0)), on_completed(230))
    xs = s.create_hot_observable(on_next(201, ("r", 2.0)), on_completed(210))
    op = interval_join(right, key=lambda e: e[0], lower=-5, upper=5, timestamp=lambda e: e[1])
    res = s.start(lambda: xs.pipe(op))
    assert res.messages == [on_next(202, (("r", 2.0), ("r", 1.0))), on_completed(230)]


def test_an_error_on_the_other_side_ends_the_join() -> None:
    s = TestScheduler()
    boom = RuntimeError("boom")
    right = s.create_hot_observable(on_error(205, boom))
    xs = s.create_hot_observable(on_next(201, ("a", 1.0)), on_next(210, ("a", 2.0)))
    op = join_window(right, key=lambda e: e[0], window=tumbling(10), timestamp=lambda e: e[1])
    res = s.start(lambda: xs.pipe(op))
    assert res.messages == [on_error(205, boom)]
    assert [(x.subscribe, x.unsubscribe) for x in xs.subscriptions] == [(200, 205)]


def test_join_key_errors_follow_the_policy() -> None:
    dead: list[Any] = []
    left: Subject[Any] = Subject()
    right: Subject[Any] = Subject()
    got: list[Any] = []
    op = interval_join(right, key=lambda e: e["k"], lower=0, upper=1, timestamp=lambda e: e["t"],
                       on_error=lambda e, x: dead.append(e))  # fmt: skip
    left.pipe(op).subscribe(got.append)
    left.on_next({"t": 1})
    right.on_next({"k": 1, "t": 1})
    left.on_next({"k": 1, "t": 1})
    assert got == [({"k": 1, "t": 1}, {"k": 1, "t": 1})] and dead == [{"t": 1}]
    with pytest.raises(ValueError):
        interval_join(right, key=key_of, lower=2, upper=1)
    with pytest.raises(TypeError):
        join_window(right, key=key_of, window=10)
    with pytest.raises(ValueError):
        join_window(right, key=key_of, window=tumbling(10, timestamp=float))


def test_processing_time_window_join_on_virtual_time() -> None:
    s = TestScheduler()
    right = s.create_hot_observable(on_next(203, "b"), on_next(214, "a"))
    xs = s.create_hot_observable(on_next(201, "b"), on_next(212, "a"))
    op = join_window(right, key=str, window=tumbling(1 / 3), scheduler=s)
    res = s.start(lambda: xs.pipe(op))
    assert res.messages == []  # never in the same third of a second
    s2 = TestScheduler()
    r2 = s2.create_hot_observable(on_next(203, "b"), on_next(214, "a"))
    x2 = s2.create_hot_observable(on_next(201, "b"), on_next(212, "a"))
    res = s2.start(lambda: x2.pipe(join_window(r2, key=str, window=tumbling(5.0))))
    assert res.messages == [on_next(205, Window("b", 200.0, 205.0, [("b", "b")])),
                            on_next(215, Window("a", 210.0, 215.0, [("a", "a")]))]  # fmt: skip


def test_marble_draws_both_input_lanes_of_a_join() -> None:
    m = marble(
        lambda s, o: s.pipe(interval_join(o, key=str.lower, lower=-1, upper=1)),
        [(1, "a"), (4, "b")],
        other=[(1.5, "A"), (6, "B")],
        title="interval_join",
    )
    assert list(m.lanes) == ["input", "other", "output"]
    assert m.values() == [("a", "A")]
    assert 'data-lane="other"' in m.svg
    m = marble(
        lambda s, o: s.pipe(join_window(o, key=str.lower, window=tumbling(2))),
        [(1, "a"), (3, "b")],
        other=[(1.5, "A"), (5, "B")],
    )
    assert m.values() == [Window("a", 0.0, 2.0, [("a", "A")])]


def test_join_window_matches_reactivex_join_on_tumbling_processing_time() -> None:
    # reactivex has no keyed window join; with one key and windows aligned to the clock,
    # group_by_key-free pairs per window are what buffer_with_time + a product gives.
    s = TestScheduler()
    xs = s.create_hot_observable(on_next(201, 1), on_next(203, 2), on_next(207, 3))
    ys = s.create_hot_observable(on_next(202, 10), on_next(208, 30))
    res = s.start(lambda: xs.pipe(join_window(ys, key=lambda _: 0, window=tumbling(5.0))))
    ours = [m.value.value.value for m in res.messages if m.value.kind == "N"]
    assert ours == [[(1, 10), (2, 10)], [(3, 30)]]
    s = TestScheduler()
    xs = s.create_hot_observable(on_next(201, 1), on_next(203, 2), on_next(207, 3))
    ys = s.create_hot_observable(on_next(202, 10), on_next(208, 30))
    lb = xs.pipe(ops.map(lambda x: (0, x)))
    rb = ys.pipe(ops.map(lambda y: (1, y)))
    res = s.start(lambda: lb.pipe(ops.merge(rb), ops.buffer_with_time(5.0)))
    theirs = [[(a, b) for sa, a in w if sa == 0 for sb, b in w if sb == 1]
              for w in (m.value.value for m in res.messages if m.value.kind == "N")]  # fmt: skip
    assert [p for p in theirs if p] == ours

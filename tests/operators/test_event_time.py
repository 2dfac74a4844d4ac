"""Event-time windows against brute-force models written from docs/guide/operators.md's definitions.

- A window ``k`` of ``sliding(size, step)`` is ``[k*step, k*step + size)`` for an integer
  ``k`` (tumbling: ``step == size``), its bounds computed exactly from the decimal values
  of ``step`` and ``size`` as written (``tumbling(2.2)`` has a window ``[26.4, 28.6)``),
  each rounded once to a float; it is created by its first event.
- The watermark is the largest timestamp seen minus ``lateness``; a window closes (is
  emitted) once the watermark reaches its end, closing windows in end order.
- An event counts in each of its windows that is still open (end > watermark); it is late
  (``Late`` in the main output) only if none of its windows is open.
- Sessions, per key: events closer than ``gap`` share a session ``[first, last + gap)``;
  an event merges every open session of its key it is within ``gap`` of; it is late only
  if the merged session would already be closed (end <= watermark).

Each input event is pushed through a ``Subject`` and the output it causes is recorded as
one step, so the properties check *when* windows close, not just what they hold. Windows
closing in one step are compared in a canonical order (end, start, key).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reactivex.subject import Subject

from operators import Late, Window, session, sliding, tumbling

Ev = tuple[str, float]  # (key, timestamp)


def steps(events: list[Any], op: Callable[[Any], Any]) -> list[list[Any]]:
    """The output caused by each event, then by completion, as canonical steps."""
    subject: Subject[Any] = Subject()
    out: list[Any] = []
    subject.pipe(op).subscribe(out.append)
    result = []
    for e in events:
        subject.on_next(e)
        result.append(canonical(out))
        out.clear()
    subject.on_completed()
    result.append(canonical(out))
    return result


def canonical(items: list[Any]) -> list[Any]:
    def order(x: Any) -> tuple[Any, ...]:
        if isinstance(x, Late):
            return (0, 0.0, 0.0, repr(x))
        return (1, x.end, x.start, repr(x.key))

    return sorted(items, key=order)


# -- the models ----------------------------------------------------------------------------


def model_windows(events: list[Ev], size: float, step: float, lateness: float) -> list[Any]:
    wm = -math.inf
    open_: dict[tuple[str, int], list[Ev]] = {}
    result: list[list[Any]] = []
    exact_step, exact_size = Fraction(repr(step)), Fraction(repr(size))

    def start(k: int) -> float:
        return float(exact_step * k)

    def end(k: int) -> float:
        return float(exact_step * k + exact_size)

    def close(upto: float) -> list[Any]:
        done = sorted((k for k in open_ if end(k[1]) <= upto),
                      key=lambda k: (end(k[1]), start(k[1]), repr(k[0])))  # fmt: skip
        return [Window(k[0], start(k[1]), end(k[1]), open_.pop(k)) for k in done]

    for key, t in events:
        around = math.floor(t / step)
        ks = [k for k in range(around - math.ceil(size / step) - 2, around + 3)
              if start(k) <= t < end(k)]  # fmt: skip
        live = [k for k in ks if end(k) > wm]
        step_out: list[Any] = [] if live else [Late((key, t))]
        for k in live:
            open_.setdefault((key, k), []).append((key, t))
        wm = max(wm, t - lateness)
        result.append(canonical(step_out + close(wm)))
    result.append(canonical(close(math.inf)))
    return result


def model_sessions(events: list[Ev], gap: float, lateness: float) -> list[Any]:
    wm = -math.inf
    open_: dict[str, list[list[Ev]]] = {}
    result: list[list[Any]] = []

    def close(upto: float) -> list[Any]:
        out = []
        for key, sessions in open_.items():
            for s in [s for s in sessions if max(t for _, t in s) + gap <= upto]:
                sessions.remove(s)
                ts = [t for _, t in s]
                out.append(Window(key, min(ts), max(ts) + gap, s))
        return out

    for key, t in events:
        mine = open_.setdefault(key, [])
        near = [s for s in mine if any(abs(t - u) < gap for _, u in s)]
        step_out: list[Any] = []
        if not near and t + gap <= wm:
            step_out.append(Late((key, t)))
        else:
            merged = sorted([e for s in near for e in s] + [(key, t)], key=lambda e: e[1])
            for s in near:
                mine.remove(s)
            mine.append(merged)
        wm = max(wm, t - lateness)
        result.append(canonical(step_out + close(wm)))
    result.append(canonical(close(math.inf)))
    return result


def session_items(steps_: list[list[Any]]) -> list[list[Any]]:
    """Session members compared as time-sorted lists (merges may interleave arrival order)."""
    fixed = []
    for step in steps_:
        fixed.append([
            w._replace(value=sorted(w.value, key=lambda e: e[1])) if isinstance(w, Window) else w
            for w in step
        ])  # fmt: skip
    return fixed


def key_of(e: Ev) -> str:
    return e[0]


def time_of(e: Ev) -> float:
    return e[1]


# -- strategies ----------------------------------------------------------------------------

SHAPES = [(10.0, 10.0), (10.0, 5.0), (6.0, 4.0), (0.7, 0.15), (2.2, 2.2), (1.0, 0.1), (0.3, 0.3)]
times = st.one_of(
    st.integers(0, 60).map(float),
    st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 2)),
)
events = st.lists(st.tuples(st.sampled_from("AB"), times), max_size=30)


@given(events, st.sampled_from(SHAPES), st.sampled_from([0.0, 0.5, 2.0, 5.0]))
def test_tumbling_and_sliding_match_the_model(evs: list[Ev], shape: Any, lateness: float) -> None:
    size, step = shape
    op = (
        tumbling(size, key=key_of, timestamp=time_of, lateness=lateness)
        if size == step
        else sliding(size, step, key=key_of, timestamp=time_of, lateness=lateness)
    )
    assert steps(evs, op) == model_windows(evs, size, step, lateness)


@given(events, st.sampled_from([3.0, 0.5, 1.1]), st.sampled_from([0.0, 1.0, 5.0]))
def test_keyed_sessions_match_the_model(evs: list[Ev], gap: float, lateness: float) -> None:
    op = session(gap, key=key_of, timestamp=time_of, lateness=lateness)
    got = session_items(steps(evs, op))
    assert got == session_items(model_sessions(evs, gap, lateness))


# -- the reported cases --------------------------------------------------------------------


def run(xs: list[Any], op: Any) -> list[Any]:
    out: list[Any] = []
    subject: Subject[Any] = Subject()
    subject.pipe(op).subscribe(out.append)
    for x in xs:
        subject.on_next(x)
    subject.on_completed()
    return out


def test_lateness_is_judged_against_the_watermark() -> None:
    assert run([25.0, 3.0, 4.0], tumbling(10, timestamp=float)) == [
        Late(3.0), Late(4.0), Window(None, 20.0, 30.0, [25.0])
    ]  # fmt: skip
    assert run([1.0, 10.0, 3.5], session(3, timestamp=float)) == [
        Window(None, 1.0, 4.0, [1.0]), Late(3.5), Window(None, 10.0, 13.0, [10.0])
    ]  # fmt: skip


def test_keyed_sessions_are_judged_per_key() -> None:
    rows = [("B", 2), ("B", 4), ("A", 6), ("A", 8), ("A", 10), ("B", 16), ("A", 4)]
    out = run(rows, session(3, key=key_of, timestamp=time_of, lateness=5))
    assert out == [
        Window("B", 2.0, 7.0, [("B", 2), ("B", 4)]),
        Window("A", 4.0, 13.0, [("A", 6), ("A", 8), ("A", 10), ("A", 4)]),
        Window("B", 16.0, 19.0, [("B", 16)]),
    ]


def test_float_window_starts_are_one_window() -> None:
    out = run([0.0, 0.4], sliding(0.7, 0.15, timestamp=float))
    starts = [w.start for w in out]
    assert len(starts) == len(set(starts)) == 7  # windows k = -4..2, each once
    assert run([26.4, 27.09], tumbling(2.2, timestamp=float)) == [
        Window(None, 26.4, 28.6, [26.4, 27.09])
    ]  # fmt: skip


# -- the decisions -------------------------------------------------------------------------


def test_sliding_event_late_for_some_windows_counts_in_the_open_ones() -> None:
    # sliding(10, 5): 12 is in [5, 15) and [10, 20); after 20 the watermark is 20 - 3 = 17,
    # so [5, 15) has closed and [10, 20) is still open: 12 counts there (as in Flink).
    late: list[float] = []
    out = run([6.0, 20.0, 12.0], sliding(10, 5, timestamp=float, lateness=3, late=late.append))
    assert late == []
    assert Window(None, 10.0, 20.0, [12.0]) in out
    assert Window(None, 5.0, 15.0, [6.0]) in out
    # late for every one of its windows: the late output
    out = run([6.0, 30.0, 12.0], sliding(10, 5, timestamp=float, late=late.append))
    assert late == [12.0] and all(12.0 not in w.value for w in out)


def test_sliding_refuses_gaps_between_windows() -> None:
    with pytest.raises(ValueError, match="step"):
        sliding(5, 10)
    sliding(10, 10)  # tumbling is the limit

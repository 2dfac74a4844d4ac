"""The fused path behaves exactly like stock reactivex, errors and disposal included."""

from __future__ import annotations

from typing import Any

import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.subject import Subject

from operators import DeadLetter, batch, select, where
from streams import from_iterable


def record(obs: reactivex.Observable[Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    obs.subscribe(
        lambda x: out.append(("N", x)),
        lambda e: out.append(("E", repr(e))),
        lambda: out.append(("C", None)),
    )
    return out


def pred(x: int) -> bool:
    if x == 13:
        raise ValueError("unlucky")
    return x % 3 != 0


def mapper(x: int) -> int:
    if x == 7:
        raise KeyError("seven")
    return x * 2


ints = st.lists(st.integers(-20, 20), max_size=60)


@given(ints, st.integers(1, 7))
def test_fused_chain_equals_reactivex_including_user_errors(xs: list[int], n: int) -> None:
    ours = from_iterable(xs).pipe(where(pred), select(mapper), batch(count=n))
    stock = from_iterable(xs).pipe(ops.filter(pred), ops.map(mapper), ops.buffer_with_count(n))
    assert record(ours) == record(stock)


@given(ints)
def test_mixing_with_reactivex_operators(xs: list[int]) -> None:
    ours = from_iterable(xs).pipe(
        where(lambda x: x > 0), ops.map(lambda x: x + 1), select(str), ops.take(5)
    )
    stock = from_iterable(xs).pipe(
        ops.filter(lambda x: x > 0), ops.map(lambda x: x + 1), ops.map(str), ops.take(5)
    )
    assert record(ours) == record(stock)


@given(ints)
def test_skip_and_dead_letter_policies_keep_the_stream_alive(xs: list[int]) -> None:
    dead: list[DeadLetter] = []
    sink: Subject[DeadLetter] = Subject()
    sink.subscribe(dead.append)
    got = record(from_iterable(xs).pipe(select(mapper, on_error=sink), where(bool, "skip")))
    assert got[-1] == ("C", None)
    assert [v for k, v in got if k == "N"] == [x * 2 for x in xs if x != 7 and x != 0]
    assert [d.event for d in dead] == [x for x in xs if x == 7]
    assert all(isinstance(d.error, KeyError) for d in dead)


def test_source_error_travels_through_and_nothing_after() -> None:
    src: Subject[int] = Subject()
    got = record(src.pipe(where(bool), batch(count=10)))
    src.on_next(1)
    src.on_error(RuntimeError("boom"))
    src.on_next(2)
    src.on_completed()
    assert got == [("E", "RuntimeError('boom')")]


def test_dispose_unsubscribes_the_root() -> None:
    src: Subject[int] = Subject()
    got: list[int] = []
    d = src.pipe(where(bool), select(lambda x: x + 1)).subscribe(got.append)
    src.on_next(1)
    assert len(src.observers) == 1
    d.dispose()
    src.on_next(2)
    assert got == [2]
    assert src.observers == []


def test_failure_stops_upstream_and_later_events_are_ignored() -> None:
    src: Subject[int] = Subject()
    got = record(src.pipe(select(mapper), batch(count=2)))
    for x in (1, 7, 2, 3):
        src.on_next(x)
    assert got == [("E", "KeyError('seven')")]
    assert src.observers == []


def test_take_stops_an_endless_fused_source() -> None:
    def naturals() -> Any:
        n = 0
        while True:
            yield n
            n += 1

    got = record(from_iterable(naturals()).pipe(where(lambda x: x % 2), ops.take(3)))
    assert got == [("N", 1), ("N", 3), ("N", 5), ("C", None)]


def test_resubscribing_gives_fresh_state() -> None:
    obs = reactivex.of(1, 2, 3).pipe(batch(count=2))
    assert record(obs) == record(obs) == [("N", [1, 2]), ("N", [3]), ("C", None)]


def test_bad_policy_is_refused_at_construction() -> None:
    import pytest

    with pytest.raises(ValueError, match="on_error"):
        select(str, on_error="ignore")  # type: ignore[arg-type]

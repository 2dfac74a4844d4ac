"""Batching: order, bounds, timers (virtual time), keyed batches, comparison with reactivex."""

from __future__ import annotations

from typing import Any

import pytest
import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from operators import batch, batch_by_key
from streams import from_iterable

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed


def collect(obs: reactivex.Observable[Any]) -> list[Any]:
    out: list[Any] = []
    obs.subscribe(out.append)
    return out


blobs = st.lists(st.binary(max_size=12), max_size=50)


@given(blobs, st.integers(1, 6) | st.none(), st.integers(1, 20) | st.none())
def test_batches_concatenate_back_within_bounds(
    xs: list[bytes], count: int | None, cap: int | None
) -> None:
    if count is None and cap is None:
        count = 3
    out = collect(from_iterable(xs).pipe(batch(count=count, bytes=cap)))
    assert [x for b in out for x in b] == xs
    for b in out:
        assert b
        if count is not None:
            assert len(b) <= count
        if cap is not None and len(b) > 1:
            assert sum(map(len, b)) <= cap  # only a lone oversize event may exceed


@given(st.lists(st.integers(), max_size=60), st.integers(1, 9))
def test_count_batching_equals_buffer_with_count(xs: list[int], n: int) -> None:
    assert collect(from_iterable(xs).pipe(batch(count=n))) == collect(
        from_iterable(xs).pipe(ops.buffer_with_count(n))
    )


@given(st.lists(st.integers(), max_size=60), st.integers(1, 9))
def test_same_instant_equals_buffer_with_time_or_count(xs: list[int], n: int) -> None:
    # With all events at one instant, only the count rule applies in both operators.
    stock = [b for b in collect(from_iterable(xs).pipe(ops.buffer_with_time_or_count(60, n))) if b]
    assert collect(from_iterable(xs).pipe(batch(count=n, within=60))) == stock


def test_timer_flushes_partial_batch_without_new_events() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(
        on_next(210, 1), on_next(212, 2), on_next(300, 3), on_completed(400)
    )
    res = s.start(lambda: xs.pipe(batch(count=10, within=5.0)))
    assert res.messages == [on_next(215, [1, 2]), on_next(305, [3]), on_completed(400)]


def test_count_flush_rearms_the_one_timer_for_the_next_batch() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(
        on_next(210, 1), on_next(211, 2), on_next(213, 3), on_completed(400)
    )
    res = s.start(lambda: xs.pipe(batch(count=2, within=5.0)))
    # batch [3] opened at 213 must flush at 218, not at the stale 215 deadline
    assert res.messages == [on_next(211, [1, 2]), on_next(218, [3]), on_completed(400)]


def test_one_timer_per_open_batch_not_per_event() -> None:
    s = TestScheduler()
    scheduled: list[float] = []
    orig = s.schedule_relative

    def spy(duetime: Any, action: Any, state: Any = None) -> Any:
        scheduled.append(duetime)
        return orig(duetime, action, state)

    s.schedule_relative = spy  # type: ignore[method-assign]
    xs = s.create_hot_observable(*[on_next(201 + i, i) for i in range(50)], on_completed(300))
    s.start(lambda: xs.pipe(batch(within=100.0)))
    assert len(scheduled) == 1


def test_completion_flushes_and_dispose_cancels_timer() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(on_next(210, 1), on_next(220, 2))
    res = s.start(lambda: xs.pipe(batch(within=50.0)), disposed=230)
    assert res.messages == []
    ys = s.create_hot_observable(on_next(310, 1), on_completed(320))
    assert s.start(lambda: ys.pipe(batch(within=50.0)), created=300, subscribed=305).messages == [
        on_next(320, [1]),
        on_completed(320),
    ]


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers()), max_size=40), st.integers(1, 4))
def test_keyed_batches_keep_per_key_order_and_bounds(xs: list[tuple[str, int]], n: int) -> None:
    out = collect(from_iterable(xs).pipe(batch_by_key(lambda kv: kv[0], count=n)))
    for key in "abc":
        mine = [item for k, b in out if k == key for item in b]
        assert mine == [kv for kv in xs if kv[0] == key]
    assert all(0 < len(b) <= n and all(kv[0] == k for kv in b) for k, b in out)


def test_size_function_errors_follow_policy() -> None:
    def size(x: Any) -> int:
        return len(x)

    out = collect(from_iterable([b"a", 5, b"b"]).pipe(batch(bytes=10, size=size, on_error="skip")))
    assert out == [[b"a", b"b"]]


def test_invalid_arguments() -> None:
    import pytest

    with pytest.raises(ValueError):
        batch()
    with pytest.raises(ValueError):
        batch(count=0)
    with pytest.raises(ValueError):
        batch(within=-1)


def test_float_leftover_does_not_rearm_forever() -> None:
    """Opened at 200.37, a 0.05 s batch flushes at its deadline; float rounding once left
    ~1e-16 s and re-armed the timer forever without advancing virtual time."""
    s = TestScheduler()
    armed: list[float] = []
    orig = s.schedule_relative

    def spy(duetime: Any, action: Any, state: Any = None) -> Any:
        armed.append(duetime)
        assert len(armed) < 10, "timer keeps re-arming"
        return orig(duetime, action, state)

    s.schedule_relative = spy  # type: ignore[method-assign]
    xs = s.create_hot_observable(on_next(200.37, "a"))
    res = s.start(lambda: xs.pipe(batch(within=0.05)))
    assert [m.value.value for m in res.messages] == [["a"]]
    assert res.messages[0].time == pytest.approx(200.42)

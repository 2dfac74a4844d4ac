"""Filtering, dedupe, throttle/debounce/sample (marbles) and the token-bucket rate limit."""

from __future__ import annotations

from typing import Any

import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex.testing import ReactiveTest, TestScheduler

from operators import by_subject, debounce, dedupe, field_match, rate_limit, sample, throttle
from streams import Event, from_iterable, match

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed

subjects = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(".".join)


@given(st.lists(subjects, max_size=20), st.sampled_from(["a.>", "*.b", "a.*.c", ">", "b"]))
def test_by_subject_keeps_exactly_matching_events(names: list[str], pattern: str) -> None:
    events = [Event.create(i, subject=s) for i, s in enumerate(names)]
    got: list[Event] = []
    from_iterable(events).pipe(by_subject(pattern)).subscribe(got.append)
    assert got == [e for e in events if match(pattern, e.subject or "")]


def test_field_match_on_dicts_and_events() -> None:
    rows: list[Any] = [{"room": "a", "u": {"id": 1}}, {"room": "a"}, Event.create({"room": "a"})]
    got: list[Any] = []
    from_iterable(rows).pipe(field_match(room="a")).subscribe(got.append)
    assert got == rows
    got.clear()
    from_iterable(rows).pipe(field_match({"u.id": 1})).subscribe(got.append)
    assert got == rows[:1]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=40), st.integers(1, 6))
def test_dedupe_passes_first_occurrences_and_no_repeat_within_ttl(
    steps: list[tuple[int, int]], ttl: int
) -> None:
    s = TestScheduler()
    msgs, t = [], 201
    for key, gap in steps:
        t += gap
        msgs.append(on_next(t, key))
    xs = s.create_hot_observable(*msgs)
    res = s.start(lambda: xs.pipe(dedupe(ttl=float(ttl))), disposed=10_000)
    passed = [(m.time, m.value.value) for m in res.messages]
    seen: dict[int, float] = {}
    expected = []
    for m in msgs:
        k = m.value.value
        if k not in seen or m.time >= seen[k] + ttl:
            seen[k] = m.time
            expected.append((m.time, k))
    assert passed == expected


def test_dedupe_memory_is_bounded() -> None:
    got: list[int] = []
    from_iterable([1, 2, 3, 1]).pipe(dedupe(max_keys=2)).subscribe(got.append)
    assert got == [1, 2, 3, 1]  # 1 was forgotten to stay within two keys


def test_throttle_first_marbles() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(
        on_next(210, 1), on_next(215, 2), on_next(221, 3), on_completed(230)
    )
    res = s.start(lambda: xs.pipe(throttle(10.0)))
    assert res.messages == [on_next(210, 1), on_next(221, 3), on_completed(230)]


def test_throttle_latest_marbles() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(
        on_next(210, 1), on_next(212, 2), on_next(215, 3), on_next(240, 4), on_completed(300)
    )
    res = s.start(lambda: xs.pipe(throttle(10.0, latest=True)))
    assert res.messages == [on_next(210, 1), on_next(220, 3), on_next(240, 4), on_completed(300)]


def test_debounce_marbles_and_single_timer() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(
        on_next(210, 1), on_next(212, 2), on_next(230, 3), on_next(232, 4), on_completed(234)
    )
    res = s.start(lambda: xs.pipe(debounce(5.0)))
    assert res.messages == [on_next(217, 2), on_next(234, 4), on_completed(234)]


def test_sample_marbles() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(
        on_next(201, 1), on_next(203, 2), on_next(212, 3), on_completed(235)
    )
    res = s.start(lambda: xs.pipe(sample(5.0)))
    assert res.messages == [on_next(205, 2), on_next(215, 3), on_completed(235)]


def test_dispose_cancels_timers() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(on_next(210, 1))
    res = s.start(lambda: xs.pipe(debounce(50.0)), disposed=220)
    assert res.messages == []


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=60),
    st.sampled_from([0.5, 1.0, 2.0]),
    st.integers(1, 4),
    st.sampled_from(["drop", "delay"]),
)
def test_rate_limit_never_exceeds_rate_plus_burst(
    gaps: list[int], rate: float, burst: int, mode: Any
) -> None:
    s = TestScheduler()
    t, msgs = 201, []
    for i, g in enumerate(gaps):
        msgs.append(on_next(t, i))
        t += g
    xs = s.create_hot_observable(*msgs, on_completed(t + 1))
    res = s.start(lambda: xs.pipe(rate_limit(rate, burst, mode)), disposed=100_000)
    times = [m.time for m in res.messages if m.value.kind == "N"]
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - start) + 1e-9
    values = [m.value.value for m in res.messages if m.value.kind == "N"]
    if mode == "delay":
        assert values == list(range(len(gaps)))  # nothing accepted is lost, order kept
        assert res.messages[-1].value.kind == "C"
    else:
        assert values == sorted(values)


def test_rate_limit_delay_queue_overflow_is_an_error() -> None:
    got: list[Any] = []
    reactivex.of(1, 2, 3).pipe(
        rate_limit(1.0, 1, "delay", max_queue=1, scheduler=TestScheduler())
    ).subscribe(got.append, lambda e: got.append(type(e).__name__))
    assert got == [1, "RateLimitError"]

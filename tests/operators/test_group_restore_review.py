"""Adversarial checks of group restore: odd keys, nesting, expiry and reopening, bad input.

Each test resumes a pipeline from a JSON snapshot on another clock (``check`` from the
snapshot tests) and expects the output of one uninterrupted run.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable
from reactivex.subject import Subject
from reactivex.testing import TestScheduler
from test_snapshots import check, cuts, durations

from operators import group_by_key, rate_limit, session
from operators.state import collecting
from streams import from_iterable

ODD_KEYS = ["a", "1", 1, 2.5, "ä]/x", 'q"]/r', ("a", 1), ("a", (1,)), "", None, True]
odd_stream = st.lists(
    st.tuples(st.integers(0, 40), st.sampled_from(range(len(ODD_KEYS)))), max_size=30
).map(lambda es: [(float(t), {"t": t, "k": i}) for t, i in sorted(es)])


def at(e: Any) -> int:
    return int(e["t"])


def slot(e: Any) -> int:
    return int(e["k"])


def limited_groups(expire: Any, key: Any) -> Any:
    def build(o: Any, s: TestScheduler) -> Any:
        def per_key(group: Any) -> Any:
            k = group.key
            limit: Any = rate_limit(0.37, 2, scheduler=s)
            return group.pipe(limit, ops.map(lambda e: (repr(k), at(e))))

        grouped = o.pipe(group_by_key(key, expire_after=expire, scheduler=s))
        return grouped.pipe(ops.flat_map(per_key))

    return build


@settings(max_examples=60)
@given(odd_stream, cuts, st.none() | durations)
def test_odd_keys_resume(events: Any, cut: float, expire: Any) -> None:
    check(limited_groups(expire, lambda e: ODD_KEYS[slot(e)]), events, cut)


@settings(max_examples=60)
@given(odd_stream, cuts, st.none() | durations, st.none() | durations)
def test_nested_groups_resume(events: Any, cut: float, outer: Any, inner: Any) -> None:
    def build(o: Any, s: TestScheduler) -> Any:
        def per_inner(group: Any) -> Any:
            k = group.key
            return group.pipe(rate_limit(0.37, 1, scheduler=s), ops.map(lambda e: (k, at(e))))

        def per_outer(group: Any) -> Any:
            g = group.pipe(group_by_key(lambda e: slot(e) % 3, expire_after=inner, scheduler=s))
            return g.pipe(ops.flat_map(per_inner))

        grouped = o.pipe(group_by_key(lambda e: slot(e) % 2, expire_after=outer, scheduler=s))
        return grouped.pipe(ops.flat_map(per_outer))

    check(build, events, cut)


def limited_by_time(times: list[Any], on_error: Any) -> tuple[list[Any], list[Any]]:
    out: list[Any] = []
    errors: list[Any] = []
    limit = rate_limit(1.0, 1, timestamp=lambda e: e, on_error=on_error)
    source = from_iterable(times).pipe(limit)
    source.subscribe(out.append, errors.append)
    return out, errors


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, None, "x"])
def test_a_bad_event_time_is_skipped_and_does_not_poison_the_bucket(bad: Any) -> None:
    """A non-finite or missing time follows on_error; later events are judged as if it
    never came (an infinite time must not stop the bucket refilling for ever)."""
    dead: list[Any] = []
    out, errors = limited_by_time([0.0, bad, 1.0, 2.0], lambda v, e: dead.append(v))
    assert (out, errors) == ([0.0, 1.0, 2.0], [])
    assert len(dead) == 1


@pytest.mark.parametrize("bad", [math.inf, math.nan, None])
def test_a_bad_event_time_fails_the_pipeline_by_default(bad: Any) -> None:
    out, errors = limited_by_time([0.0, bad, 1.0], "fail")
    assert out == [0.0]
    assert len(errors) == 1


@settings(max_examples=40)
@given(odd_stream, cuts, st.none() | durations)
def test_a_group_pipeline_subscribed_twice_resumes(events: Any, cut: float, expire: Any) -> None:
    def build(o: Any, s: TestScheduler) -> Any:
        def per_key(group: Any) -> Any:
            fast = group.pipe(rate_limit(0.37, 2, scheduler=s), ops.map(lambda e: ("f", at(e))))
            slow = group.pipe(rate_limit(0.1, 1, scheduler=s), ops.map(lambda e: ("s", at(e))))
            return reactivex.create(  # both subscribed on arrival (ops.merge would defer)
                lambda o, _: CompositeDisposable(
                    fast.subscribe(o.on_next, o.on_error), slow.subscribe(o.on_next, o.on_error)
                )
            )

        grouped = o.pipe(group_by_key(lambda e: slot(e) % 3, expire_after=expire, scheduler=s))
        return grouped.pipe(ops.flat_map(per_key))

    check(build, events, cut)


def test_short_lived_groups_leave_nothing_in_the_collection() -> None:
    s, subject = TestScheduler(), Subject[Any]()

    def inner(g: Any) -> Any:
        return g.pipe(group_by_key(lambda e: e, expire_after=0.5, scheduler=s))

    def limited(g: Any) -> Any:
        return g.pipe(rate_limit(1, 1, scheduler=s))

    with collecting() as stages:
        grouped = subject.pipe(group_by_key(lambda e: e, expire_after=1.0, scheduler=s))
        grouped.pipe(ops.flat_map(inner), ops.flat_map(limited)).subscribe(scheduler=s)
    for i in range(500):
        s.advance_to(i * 2.0)
        subject.on_next(i)
        assert len(stages) == 3  # the outer stage, this key's inner group stage and its limit
    s.advance_to(2000.0)
    assert list(stages) == ["group_by_key-0"]


@settings(max_examples=60)
@given(odd_stream, cuts, st.none() | durations, st.sampled_from([0.0, 2.0]))
def test_per_key_windows_over_odd_keys_inside_groups_resume(
    events: Any, cut: float, expire: Any, lateness: float
) -> None:
    def build(o: Any, s: TestScheduler) -> Any:
        def per_group(group: Any) -> Any:
            return group.pipe(
                session(
                    2.0,
                    timestamp=lambda e: (at(e) * 7) % 23,
                    key=lambda e: ODD_KEYS[slot(e)],
                    lateness=lateness,
                    watermark="per_key",
                    scheduler=s,
                ),
                ops.map(lambda w: (group.key, w)),  # True and 1 are one key: compared by ==
            )

        grouped = o.pipe(group_by_key(lambda e: slot(e) % 2, expire_after=expire, scheduler=s))
        return grouped.pipe(ops.flat_map(per_group))

    check(build, events, cut)

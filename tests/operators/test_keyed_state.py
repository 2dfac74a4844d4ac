"""Keyed state that gives the same answers however keys are spread over partitions.

A keyed worker group runs one pipeline per partition: each sees only its keys' events, in
their order. A pipeline whose state and decisions are per key and on event time (windows
with ``watermark="per_key"``, ``rate_limit(timestamp=...)`` inside ``group_by_key``) must
give, key by key, what one pipeline over all events gives. Groups are observables with a
``.key`` (reactivex's ``GroupedObservable``).
"""

from __future__ import annotations

from typing import Any

import pytest
import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from operators import Group, count_of, group_by_key, rate_limit, session, sliding, tumbling
from operators.routing import stable_hash

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed

Item = dict[str, Any]
KEYS = ["a", "b", "c", "d", "e"]
events = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(0, 60)).map(lambda p: {"k": p[0], "t": p[1]}),
    max_size=60,
)


def key_of(e: Item) -> str:
    return str(e["k"])


def time_of(e: Item) -> float:
    return float(e["t"])


def run(pipeline: Any, items: list[Item]) -> list[Any]:
    """Feed ``items`` and never complete (a worker's pipeline never completes)."""
    subject, out = Subject[Item](), list[Any]()
    pipeline(subject).subscribe(out.append)
    for e in items:
        subject.on_next(e)
    return out


def by_key(outputs: list[Any], key: Any) -> dict[Any, list[Any]]:
    got: dict[Any, list[Any]] = {}
    for v in outputs:
        got.setdefault(key(v), []).append(v)
    return got


def partitioned(pipeline: Any, items: list[Item], n: int) -> list[Any]:
    """The outputs of ``n`` pipelines, each fed the events of its keys only."""
    out: list[Any] = []
    for p in range(n):
        out += run(pipeline, [e for e in items if stable_hash(e["k"]) % n == p])
    return out


def window_key(w: Any) -> Any:
    return w.event["k"] if hasattr(w, "event") else w.key


shapes = st.sampled_from(
    [
        lambda **kw: tumbling(5, **kw),
        lambda **kw: sliding(6, 2, **kw),
        lambda **kw: session(3, **kw),
    ]
)


@given(events, shapes, st.sampled_from([0.0, 4.0]), st.integers(2, 4))
def test_per_key_watermark_windows_do_not_depend_on_partitioning(
    items: list[Item], shape: Any, lateness: float, n: int
) -> None:
    def pipeline(o: Any) -> Any:
        return o.pipe(
            shape(key=key_of, timestamp=time_of, lateness=lateness, agg=count_of(),
                  watermark="per_key")
        )  # fmt: skip

    whole = by_key(run(pipeline, items), window_key)
    assert by_key(partitioned(pipeline, items, n), window_key) == whole


def test_a_stream_watermark_does_depend_on_partitioning() -> None:
    """Why ``per_key`` exists: ``b``'s time 30 closes ``a``'s window only where both meet."""
    items = [{"k": "a", "t": 1}, {"k": "b", "t": 30}, {"k": "a", "t": 2}]

    def pipeline(o: Any) -> Any:
        return o.pipe(tumbling(10, key=key_of, timestamp=time_of, agg=count_of()))

    a_alone = run(pipeline, [e for e in items if e["k"] == "a"])
    assert len(run(pipeline, items)) != len(a_alone)


def rate_limited(o: Any) -> Any:
    def per_key(group: Group[str, Item]) -> Any:
        return group.pipe(rate_limit(0.5, burst=2, timestamp=time_of))

    return o.pipe(group_by_key(key_of), ops.flat_map(per_key))


@given(events, st.integers(2, 4))
def test_event_time_rate_limits_per_group_do_not_depend_on_partitioning(
    items: list[Item], n: int
) -> None:
    whole = by_key(run(rate_limited, items), key_of)
    assert by_key(partitioned(rate_limited, items, n), key_of) == whole


def test_an_event_time_rate_limit_ignores_when_events_arrive() -> None:
    """Marbles: the same event times arriving at other instants get the same verdicts."""
    times = [0, 0, 0, 1, 2, 2, 9]

    def passed(spacing: float) -> list[Any]:
        s = TestScheduler()
        source = s.create_hot_observable(
            *[on_next(200 + i * spacing + 1, {"k": "a", "t": t}) for i, t in enumerate(times)],
            on_completed(400),
        )
        limit = rate_limit(0.5, burst=2, timestamp=time_of, scheduler=s)
        got = s.start(lambda: source.pipe(limit), disposed=1000)
        return [m.value.value["t"] for m in got.messages if m.value.kind == "N"]  # type: ignore[union-attr]

    assert [passed(spacing) for spacing in (0.0, 0.5, 7.0)] == [[0, 0, 2, 9]] * 3


def test_an_event_time_rate_limit_cannot_delay() -> None:
    with pytest.raises(ValueError, match="can only drop"):
        rate_limit(1.0, mode="delay", timestamp=time_of)


def test_a_per_key_watermark_needs_a_key_and_event_time() -> None:
    with pytest.raises(ValueError, match="per_key"):
        tumbling(5, timestamp=time_of, watermark="per_key")
    with pytest.raises(ValueError, match="per_key"):
        tumbling(5, key=key_of, watermark="per_key")
    with pytest.raises(ValueError, match="watermark"):
        tumbling(5, watermark="everywhere")  # type: ignore[arg-type]


def test_a_group_is_an_observable_with_a_key() -> None:
    """Marbles: ``group.pipe`` and ``group.subscribe`` as on a ``GroupedObservable``;
    ``group.events`` is the group itself, and a group subscribed after it ended completes."""
    s = TestScheduler()
    source = s.create_hot_observable(
        on_next(210, "a1"), on_next(220, "b1"), on_next(230, "a2"), on_completed(300)
    )
    groups: list[Group[str, str]] = []

    def tag(group: Group[str, str]) -> Any:
        groups.append(group)
        assert group.events is group
        return group.pipe(ops.map(lambda v: f"{group.key}:{v}"))

    got = s.start(lambda: source.pipe(group_by_key(lambda v: v[0]), ops.flat_map(tag)))
    assert got.messages == [
        on_next(210, "a:a1"), on_next(220, "b:b1"), on_next(230, "a:a2"), on_completed(300)
    ]  # fmt: skip
    assert [g.key for g in groups] == ["a", "b"]
    assert isinstance(groups[0], reactivex.Observable)
    assert repr(groups[0]) == "Group(key='a')"
    late: list[str] = []
    groups[0].subscribe(on_completed=lambda: late.append("completed"))
    assert late == ["completed"]

"""Windows (event and processing time, late output, idle close) and routing operators."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from operators import (
    Late,
    UnroutableError,
    Window,
    broadcast,
    count_of,
    group_by_key,
    mean_of,
    partition,
    publish_to,
    route,
    route_when,
    sliding,
    stable_hash,
    sum_of,
    top_k,
    tumbling,
)
from streams import MemoryBroker, from_iterable

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed


def run(xs: list[Any], op: Any) -> list[Any]:
    out: list[Any] = []
    from_iterable(xs).pipe(op).subscribe(out.append)
    return out


@given(
    st.lists(st.integers(0, 100), max_size=40),
    st.sampled_from([(10, 10), (10, 5), (6, 4)]),
    st.integers(0, 15),
)
def test_every_event_lands_in_its_windows_or_late(ts: list[int], shape: Any, lateness: int) -> None:
    size, step = shape
    late: list[int] = []
    out = run(ts, sliding(size, step, timestamp=float, lateness=lateness, late=late.append))
    for w in out:
        assert isinstance(w, Window) and w.value
        assert all(w.start <= t < w.end for t in w.value)
    # an on-time event is in each of its windows still open, so in one at least (the exact
    # windows are checked against a model in test_event_time.py)
    on_time = list(ts)
    for t in late:
        on_time.remove(t)
    for t in set(on_time):
        n_windows = sum(1 for k in range(-100, 100) if k * step <= t < k * step + size)
        assert on_time.count(t) <= sum(w.value.count(t) for w in out)
        assert sum(w.value.count(t) for w in out) <= on_time.count(t) * n_windows


def test_tumbling_with_watermark_and_late_side_output() -> None:
    late: Subject[int] = Subject()
    got_late: list[int] = []
    late.subscribe(got_late.append)
    out = run([1, 2, 11, 3, 25, 12], tumbling(10, timestamp=float, lateness=2, late=late))
    assert out == [Window(None, 0.0, 10.0, [1, 2, 3]), Window(None, 10.0, 20.0, [11]),
                   Window(None, 20.0, 30.0, [25])]  # fmt: skip
    assert got_late == [12]  # 25 - 2 moved the watermark past [10, 20)
    out = run([1, 15, 2], tumbling(10, timestamp=float, agg=count_of()))
    assert out == [Window(None, 0.0, 10.0, 1), Late(2), Window(None, 10.0, 20.0, 1)]


def test_keyed_windows_and_aggregations() -> None:
    rows = [("a", 1), ("b", 5), ("a", 3)]
    out = run(rows, tumbling(10, key=lambda r: r[0], timestamp=lambda r: r[1],
                             agg=sum_of(lambda r: r[1])))  # fmt: skip
    assert sorted(out) == [Window("a", 0.0, 10.0, 4), Window("b", 0.0, 10.0, 5)]
    assert mean_of()([1, 2]) == 1.5
    assert top_k(1, lambda r: r[1])(rows) == [("b", 5)]


def test_processing_time_windows_close_on_their_own() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(on_next(201, "a"), on_next(204, "b"), on_next(212, "c"))
    res = s.start(lambda: xs.pipe(tumbling(10.0, agg=count_of())))
    assert res.messages == [on_next(210, Window(None, 200.0, 210.0, 2)),
                            on_next(220, Window(None, 210.0, 220.0, 1))]  # fmt: skip


def test_event_time_windows_close_on_idle() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(on_next(201, 1.0), on_next(202, 2.0))
    res = s.start(lambda: xs.pipe(tumbling(10, timestamp=float, idle=30.0, agg=count_of())))
    assert res.messages == [on_next(232, Window(None, 0.0, 10.0, 2))]


def test_session_windows() -> None:
    from operators import session

    out = run([1, 2, 4, 20, 21], session(3, timestamp=float, agg=count_of()))
    assert out == [Window(None, 1.0, 7.0, 3), Window(None, 20.0, 24.0, 2)]


@given(st.lists(st.integers(0, 30), max_size=40))
def test_every_event_reaches_exactly_one_route_branch(xs: list[int]) -> None:
    bs = from_iterable(xs).pipe(route(lambda x: x % 4, [0, 1, 2], unmatched="other"))
    got: dict[Any, list[int]] = {name: [] for name in bs}
    for name in bs:
        bs[name].subscribe(got[name].append)
    bs.connect()
    assert sorted(x for v in got.values() for x in v) == sorted(xs)
    assert got["other"] == [x for x in xs if x % 4 == 3]


def test_strict_route_fails_on_unmatched() -> None:
    bs = from_iterable([1, 2]).pipe(route_when({"one": lambda x: x == 1}))
    errors: list[Exception] = []
    bs["one"].subscribe(lambda x: None, errors.append)
    bs.connect()
    assert isinstance(errors[0], UnroutableError)


@given(st.lists(st.text(max_size=3), max_size=30), st.integers(1, 5))
def test_partition_is_stable_per_key(keys: list[str], n: int) -> None:
    bs = from_iterable(keys).pipe(partition(n, key=lambda k: k))
    where: dict[str, set[int]] = {}
    for i in bs:
        bs[i].subscribe(lambda k, i=i: where.setdefault(k, set()).add(i))
    bs.connect()
    assert all(s == {stable_hash(k) % n} for k, s in where.items())
    assert stable_hash("room") == stable_hash("room") == __import__("zlib").crc32(b"room")


@given(st.lists(st.integers(), max_size=20))
def test_broadcast_reaches_all_branches_with_one_upstream(xs: list[int]) -> None:
    bs = from_iterable(xs).pipe(broadcast(["a", "b"]))
    got: dict[str, list[int]] = {"a": [], "b": []}
    for name in bs:
        bs[name].subscribe(got[name].append)
    bs.connect()
    assert got["a"] == got["b"] == xs


def test_publish_to_broker_subject_per_event() -> None:
    broker = MemoryBroker()
    seen: list[str] = []
    broker.subscribe("chat.>").subscribe(lambda e: seen.append(e.subject))
    rows = [{"room": "a"}, {"room": "bad subject"}, {"room": "b"}]
    out = run(rows, publish_to(broker, lambda m: f"chat.{m['room']}", on_error="skip"))
    assert seen == ["chat.a", "chat.b"] and out == [rows[0], rows[2]]


def test_group_by_key_expires_idle_groups() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(
        on_next(210, "a1"), on_next(215, "a2"), on_next(250, "a3"), on_completed(300)
    )
    log: list[tuple[float, str]] = []

    def on_group(g: Any) -> None:
        g.events.subscribe(
            lambda x: log.append((s.clock, x)), on_completed=lambda: log.append((s.clock, "end"))
        )

    xs.pipe(group_by_key(lambda x: x[0], expire_after=10.0)).subscribe(on_group, scheduler=s)
    s.start()
    assert log == [(210, "a1"), (215, "a2"), (225, "end"), (250, "a3"), (260, "end")]


def test_invalid_window_arguments() -> None:
    with pytest.raises(ValueError):
        tumbling(0)
    with pytest.raises(ValueError):
        sliding(10, 5, lateness=-1)

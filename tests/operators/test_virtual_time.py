"""Timers on virtual time: never spinning, never late, against reactivex's own operators.

``TestScheduler`` keeps time as a ``datetime`` (microseconds). A timer re-armed for the
sub-microsecond remainder of a float deadline is scheduled at "now": ``advance_to`` then
never returns and ``start()`` bumps the clock by a whole second. Every timer here must fire
within a microsecond of its deadline, once.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from adapters.notebook import marble
from operators import (
    Window,
    batch,
    batch_by_key,
    count_of,
    debounce,
    group_by_key,
    rate_limit,
    sliding,
    tumbling,
)

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed
pytestmark = pytest.mark.timeout(20)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 2e-6


def times_of(messages: list[Any]) -> list[float]:
    return [float(m.time) for m in messages]


@pytest.mark.timeout(10)
def test_marble_of_debounce_returns() -> None:
    m = marble(lambda s: s.pipe(debounce(0.1)), [(1, "a"), (1.05, "b")])
    assert m.values() == ["b"]
    [t] = [mk.t for mk in m.lanes["output"] if mk.kind == "next"]
    assert close(t, 1.15)


gaps = st.lists(st.sampled_from([0.05, 0.1, 1 / 3, 0.2, 0.7, 1.0, 0.01]), min_size=1, max_size=12)


@given(gaps, st.sampled_from([1 / 3, 0.1, 0.25, 0.7]))
def test_debounce_matches_reactivex_on_virtual_time(deltas: list[float], seconds: float) -> None:
    t = 200.0
    notes = []
    for i, d in enumerate(deltas):
        t += d
        notes.append(on_next(t, i))
    notes.append(on_completed(t + 5))

    def run(op: Any) -> list[Any]:
        s = TestScheduler()
        xs = s.create_hot_observable(*notes)
        return s.start(lambda: xs.pipe(op), disposed=t + 100).messages

    ours, theirs = run(debounce(seconds)), run(ops.debounce(seconds))
    assert [m.value for m in ours] == [m.value for m in theirs]
    assert all(close(a, b) for a, b in zip(times_of(ours), times_of(theirs), strict=True))


def test_debounce_of_a_third_second_is_not_a_second_late() -> None:
    s = TestScheduler()
    xs = s.create_hot_observable(on_next(201, "x"))
    res = s.start(lambda: xs.pipe(debounce(1 / 3)))
    assert len(res.messages) == 1 and close(res.messages[0].time, 201 + 1 / 3)


@given(gaps, st.sampled_from([1 / 3, 0.1, 0.7]))
def test_batch_within_flushes_on_time(deltas: list[float], within: float) -> None:
    t, inputs = 1.0, []
    for i, d in enumerate(deltas):
        t += d
        inputs.append((t, i))
    for op in (batch(within=within), batch_by_key(lambda x: x % 2, within=within)):
        m = marble(lambda s, op=op: s.pipe(op), inputs, end=None, until=t + 2 * within + 1)
        out = [mk for mk in m.lanes["output"] if mk.kind == "next"]
        assert sum(len(v if isinstance(v, list) else v[1]) for v in m.values()) == len(inputs)
        for mk in out:  # flushed exactly ``within`` after its first event arrived
            items = mk.value if isinstance(mk.value, list) else mk.value[1]
            first_t = next(ti for ti, v in inputs if v == items[0])
            assert close(mk.t, first_t + within)


def test_processing_time_windows_close_at_their_end() -> None:
    m = marble(lambda s: s.pipe(tumbling(1 / 3, agg=count_of())), [(1.0, "a"), (1.1, "b")],
               end=None, until=3)  # fmt: skip
    [w] = m.lanes["output"]
    assert isinstance(w.value, Window) and w.value.value == 2 and close(w.t, 4 / 3)
    m = marble(lambda s: s.pipe(sliding(0.7, 0.15, agg=count_of())), [(1.0, "a")],
               end=None, until=3)  # fmt: skip
    assert [mk.value.value for mk in m.lanes["output"]] == [1] * 4  # starts 0.45 .. 0.9
    assert all(close(mk.t, mk.value.end) for mk in m.lanes["output"])


def test_event_time_idle_close_is_on_time() -> None:
    op = tumbling(10, timestamp=float, idle=1 / 3, agg=count_of())
    m = marble(lambda s: s.pipe(op), [(1.0, 1.0), (1.1, 2.0)], end=None, until=3)
    [w] = m.lanes["output"]
    assert w.value == Window(None, 0.0, 10.0, 2) and close(w.t, 1.1 + 1 / 3)


def test_group_expiry_is_on_time() -> None:
    s = TestScheduler()
    log: list[tuple[float, str]] = []

    def on_group(g: Any) -> None:
        g.events.subscribe(on_completed=lambda: log.append((float(s.clock), g.key)))

    xs = s.create_hot_observable(on_next(1.0, "a1"), on_next(1.2, "a2"))
    xs.pipe(group_by_key(lambda x: x[0], expire_after=1 / 3)).subscribe(on_group, scheduler=s)
    s.advance_to(5.0)
    [(t, key)] = log
    assert key == "a" and close(t, 1.2 + 1 / 3)


def test_rate_limit_delay_releases_on_time() -> None:
    m = marble(lambda s: s.pipe(rate_limit(3.0, mode="delay")), [(1.0, "a"), (1.0, "b"),
               (1.0, "c")], end=None, until=3)  # fmt: skip
    assert m.values() == ["a", "b", "c"]
    ts = [mk.t for mk in m.lanes["output"]]
    assert close(ts[0], 1.0) and close(ts[1], 1 + 1 / 3) and close(ts[2], 1 + 2 / 3)

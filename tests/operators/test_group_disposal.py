"""group_by_key when the outer subscription is disposed: checked against reactivex's group_by.

Every Rx (reactivex, RxJava, RxJS) reference-counts the upstream subscription: disposing the
outer subscription leaves subscribed groups running to the source's end, drops new keys, and
unsubscribes upstream once the last group subscriber has gone.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from reactivex import abc
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from operators import group_by_key

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed


def script(
    op: Any, events: list[tuple[int, str]], outer_end: int, leave: dict[str, int], end: int
) -> tuple[list[Any], list[Any]]:
    """Run a group operator; log group notifications and the upstream (un)subscription."""
    s = TestScheduler()
    notes = [on_next(t, v) for t, v in events]
    xs = s.create_hot_observable(*notes, on_completed(end))
    log: list[Any] = []

    def on_group(g: Any) -> None:
        key = g.key
        log.append((float(s.clock), "group", key))
        sub = g.pipe(ops.map(lambda x: x)) if not hasattr(g, "events") else g.events
        d = sub.subscribe(
            lambda x: log.append((float(s.clock), "next", x)),
            lambda e: log.append((float(s.clock), "error", key)),
            lambda: log.append((float(s.clock), "end", key)),
        )
        if key in leave:
            s.schedule_absolute(float(max(leave[key], s.clock)), lambda *_: d.dispose())

    box: list[abc.DisposableBase] = []
    s.schedule_absolute(100.0, lambda *_: box.append(xs.pipe(op).subscribe(on_group, scheduler=s)))
    s.schedule_absolute(float(outer_end), lambda *_: box[0].dispose())
    s.start()
    return log, [(float(sub.subscribe), float(sub.unsubscribe)) for sub in xs.subscriptions]


def key_of(x: str) -> str:
    return x[0]


@given(
    st.lists(st.tuples(st.integers(101, 140), st.sampled_from(["a1", "a2", "b1", "b2", "c1"]))),
    st.integers(101, 150),
    st.dictionaries(st.sampled_from("abc"), st.integers(101, 160)),
    st.integers(141, 170),
)
def test_outer_disposal_matches_reactivex_group_by(
    events: list[tuple[int, str]], outer_end: int, leave: dict[str, int], end: int
) -> None:
    events = sorted(events)
    ours = script(group_by_key(key_of), events, outer_end, leave, end)
    theirs = script(ops.group_by(key_of), events, outer_end, leave, end)
    assert ours == theirs


def test_subscribed_group_hears_the_end_after_outer_disposal() -> None:
    events = [(110, "a1"), (120, "b1"), (130, "a2")]
    log, upstream = script(group_by_key(key_of), events, 115, {}, 150)
    assert log == [(110.0, "group", "a"), (110.0, "next", "a1"), (130.0, "next", "a2"),
                   (150.0, "end", "a")]  # fmt: skip
    assert upstream == [(100.0, 150.0)]

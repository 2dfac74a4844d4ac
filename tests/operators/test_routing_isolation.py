"""One faulty consumer of a branch harms neither the other branches nor its siblings."""

from __future__ import annotations

import pytest

from operators import broadcast, partition, route, stable_hash
from streams import MemoryBroker, from_iterable


def _boom(_: object) -> None:
    raise RuntimeError("consumer bug")


def test_faulty_branch_consumer_ends_only_itself_on_a_live_broker():
    broker = MemoryBroker()
    branches = broker.subscribe("x.>").pipe(route(lambda e: e.data % 2, [0, 1]))
    good: list[int] = []
    errors: list[Exception] = []
    branches[0].subscribe(lambda e: good.append(e.data))
    branches[1].subscribe(_boom, errors.append)
    sibling: list[int] = []
    branches[1].subscribe(lambda e: sibling.append(e.data))
    branches.connect()
    for i in range(6):
        broker.publish("x.y", i)
    assert good == [0, 2, 4]
    assert sibling == [1, 3, 5]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


@pytest.mark.parametrize("make", [lambda: broadcast(["a", "b"]), lambda: partition(2, key=str)])
def test_broadcast_and_partition_isolate_consumers(make):
    branches = from_iterable(range(10)).pipe(make())
    names = list(branches)
    got: list[int] = []
    branches[names[0]].subscribe(_boom, lambda e: None)
    branches[names[1]].subscribe(got.append)
    branches.connect()
    if names == ["a", "b"]:
        expected = list(range(10))
    else:
        expected = [x for x in range(10) if stable_hash(str(x)) % 2 == names[1]]
    assert got == expected  # the healthy branch kept receiving after the other's consumer failed


def test_user_function_errors_follow_the_policy_everywhere():
    """Unhashable dedupe keys, non-finite window timestamps and a failing on_drop callback
    are the user's errors: with on_error="skip" the stream goes on."""
    import reactivex

    from operators import count_of, dedupe, rate_limit, tumbling

    got: list[object] = []
    errors: list[Exception] = []
    reactivex.of({"a": 1}, 2, 2, 3).pipe(dedupe(on_error="skip")).subscribe(
        got.append, errors.append
    )
    assert got == [2, 3] and not errors

    windows: list[object] = []
    reactivex.of(1.0, float("nan"), 2.0).pipe(
        tumbling(10, timestamp=float, agg=count_of(), on_error="skip")
    ).subscribe(windows.append, errors.append)
    assert [w.value for w in windows] == [2] and not errors

    from reactivex.testing import TestScheduler

    passed: list[int] = []
    reactivex.of(1, 2, 3).pipe(
        rate_limit(1.0, burst=1, on_drop=_boom, on_error="skip", scheduler=TestScheduler())
    ).subscribe(passed.append, errors.append)
    assert passed == [1] and not errors


def test_dedupe_reports_each_suppressed_repeat():
    import reactivex

    from operators import dedupe

    dropped: list[str] = []
    got: list[str] = []
    reactivex.of("a", "b", "a", "a", "c").pipe(dedupe(on_drop=dropped.append)).subscribe(got.append)
    assert got == ["a", "b", "c"] and dropped == ["a", "a"]

"""Codec round trips and clear errors; retry backoff in virtual time; instrumentation."""

from __future__ import annotations

import random
from typing import Any

import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex.testing import TestScheduler

from operators import (
    CodecError,
    backoff_delays,
    batch,
    encode_json,
    instrument,
    parse_json,
    retry,
    where,
)
from streams import Event, from_iterable

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


def run(xs: list[Any], *ops: Any) -> list[Any]:
    out: list[Any] = []
    from_iterable(xs).pipe(*ops).subscribe(out.append, lambda e: out.append(e))
    return out


@given(st.lists(json_values, max_size=10))
def test_encode_then_parse_round_trips(values: list[Any]) -> None:
    assert run(values, encode_json(), parse_json()) == values


def test_parse_errors_are_clear_and_follow_policy() -> None:
    out = run([b"{", b"1"], parse_json())
    assert isinstance(out[0], CodecError) and "malformed JSON" in str(out[0])
    dead: list[Any] = []
    assert run([b"{", 42, b"2"], parse_json(on_error=lambda e, x: dead.append(x))) == [2]
    assert "expected bytes or str" in str(dead[1])


def test_parse_events_and_encode_reuses_cached_bytes() -> None:
    e = Event.create({"a": 1}, subject="x.y")
    assert run([e.encode()], parse_json(events=True)) == [e]
    assert run([e], encode_json()) == [e.encode()]
    bad = run([b'{"id": "1"}'], parse_json(events=True))
    assert isinstance(bad[0], CodecError) and "not a CloudEvent" in str(bad[0])


@given(st.integers(0, 8), st.floats(0.01, 1), st.integers(0, 2**16))
def test_backoff_is_bounded_and_grows(n: int, base: float, seed: int) -> None:
    cap = base * 8
    ds = backoff_delays(n, base, cap, jitter=True, rng=random.Random(seed))
    for i, d in enumerate(ds):
        full = min(cap, base * 2**i)
        assert full / 2 <= d <= full


def test_retry_resubscribes_with_exponential_backoff_then_gives_up() -> None:
    s = TestScheduler()
    attempts: list[float] = []

    def failing(observer: Any, scheduler: Any = None) -> None:
        attempts.append(s.clock)
        observer.on_error(ConnectionError("down"))

    errors: list[Exception] = []
    reactivex.create(failing).pipe(retry(3, base=1.0, jitter=False)).subscribe(
        on_error=errors.append, scheduler=s
    )
    s.start()
    assert attempts == [0, 1, 3, 7]
    assert isinstance(errors[0], ConnectionError)


def test_retry_disposal_cancels_pending_retry() -> None:
    s = TestScheduler()
    calls: list[int] = []

    def failing(observer: Any, scheduler: Any = None) -> None:
        calls.append(1)
        observer.on_error(ConnectionError("down"))

    d = reactivex.create(failing).pipe(retry(3, base=5.0, cap=5.0)).subscribe(scheduler=s)
    d.dispose()
    s.start()
    assert calls == [1]


def test_instrumentation_counts_when_on_and_is_identity_when_off() -> None:
    op = batch(count=2)
    assert instrument.instrumented("off", op) is op
    instrument.reset()
    with instrument.enabled():
        probe = instrument.instrumented("probe")
        b = instrument.instrumented("b", op, batches=True)
    run([1, 0, 2, 3], probe, where(bool), b)
    st_ = instrument.stats()
    assert (st_["probe"].events_in, st_["probe"].events_out) == (4, 4)
    assert (st_["b"].events_in, st_["b"].events_out, st_["b"].items_out) == (3, 2, 3)
    assert st_["b"].buffer_depth == 0 and st_["b"].rate >= 0

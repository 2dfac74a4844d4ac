"""The one Backoff: its bounds hold for any settings, and every old entry point (the
brokers' reconnect delays, ``backoff_delays``, ``retry``, the client's import) is it."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st
from reactivex.testing import TestScheduler

import adapters.brokers.backoff
import adapters.client
import operators
from operators import Backoff, backoff_delays

policies = st.builds(
    Backoff,
    initial=st.floats(0.0, 2.0),
    maximum=st.floats(2.0, 60.0),
    factor=st.floats(1.0, 4.0),
    jitter=st.floats(0.0, 1.0),
    max_attempts=st.none() | st.integers(0, 50),
    seed=st.integers(0, 2**32),
)


@given(policies, st.integers(0, 100))
def test_every_delay_lies_between_the_jittered_floor_and_the_capped_ceiling(
    b: Backoff, n: int
) -> None:
    for attempt, delay in enumerate(b.delays(n)):
        top = min(b.maximum, b.initial * b.factor ** min(attempt, 64))
        assert top * (1 - b.jitter) - 1e-9 <= delay <= top + 1e-9 <= b.maximum + 1e-9
    assert len(b.delays(n)) <= n


@given(policies)
def test_max_attempts_bounds_the_count_and_reset_restores_it(b: Backoff) -> None:
    got = b.delays(60)
    assert len(got) == (60 if b.max_attempts is None else min(60, b.max_attempts))
    b.reset()
    assert b.attempts == 0
    assert len(b.delays(1)) == (0 if b.max_attempts == 0 else 1)


@given(st.integers(0, 12), st.floats(0.01, 1.0), st.integers(0, 2**16))
def test_backoff_delays_is_the_policy_with_half_jitter(n: int, base: float, seed: int) -> None:
    cap = base * 8
    old = backoff_delays(n, base, cap, jitter=True, rng=random.Random(seed))
    new = Backoff(initial=base, maximum=cap, jitter=0.5, rng=random.Random(seed)).delays(n)
    assert old == new


@given(st.integers(0, 2**16))
def test_the_brokers_reconnect_delays_keep_their_old_envelope(seed: int) -> None:
    b = adapters.brokers.backoff.reconnect_backoff(random.Random(seed))
    for n in range(40):
        ceiling = min(2.0, 0.05 * 2**n)
        assert ceiling / 2 <= b.next() <= ceiling


def test_one_class_behind_every_name() -> None:
    assert adapters.client.Backoff is operators.Backoff is adapters.brokers.backoff.Backoff


def test_retry_waits_the_policy_s_delays_in_virtual_time() -> None:
    import reactivex

    s = TestScheduler()
    subscribed_at: list[float] = []

    def failing(observer: object, scheduler: object = None) -> None:
        subscribed_at.append(s.clock)
        observer.on_error(ConnectionError("down"))  # type: ignore[attr-defined]

    errors: list[Exception] = []
    reactivex.create(failing).pipe(operators.retry(4, base=0.5, cap=3.0, jitter=False)).subscribe(
        on_error=errors.append, scheduler=s
    )
    s.start()
    waits = [b - a for a, b in itertools.pairwise(subscribed_at)]
    assert waits == Backoff(initial=0.5, maximum=3.0, jitter=0.0).delays(4)
    assert len(errors) == 1

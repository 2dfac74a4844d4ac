"""Reconnect backoff: bounded, exponential, jittered and reproducible."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.client import Backoff

settings = st.builds(
    Backoff,
    initial=st.floats(0.001, 2.0),
    maximum=st.floats(2.0, 60.0),
    factor=st.floats(1.0, 4.0),
    jitter=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)


@given(settings, st.integers(1, 200))
def test_delays_are_bounded_and_follow_the_exponential_envelope(b: Backoff, n: int) -> None:
    for attempt in range(n):
        base = min(b.maximum, b.initial * b.factor ** min(attempt, 64))
        d = b.next_delay()
        assert d is not None
        assert base * (1 - b.jitter) - 1e-9 <= d <= base + 1e-9
        assert d <= b.maximum


@given(settings)
def test_same_seed_same_delays_and_fresh_copies_restart(b: Backoff) -> None:
    first = [b.next_delay() for _ in range(10)]
    assert [b.fresh().next_delay() for _ in range(1)] == first[:1]
    again = b.fresh()
    assert [again.next_delay() for _ in range(10)] == first


def test_jitter_spreads_clients_apart() -> None:
    delays = {Backoff(initial=1.0, jitter=0.5, seed=s).next_delay() for s in range(20)}
    assert len(delays) == 20


@given(st.integers(0, 10))
def test_max_attempts_then_none_until_reset(k: int) -> None:
    b = Backoff(max_attempts=k, seed=1)
    assert all(b.next_delay() is not None for _ in range(k))
    assert b.next_delay() is None
    b.reset()
    assert b.next_delay() is not None or k == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1.0},
        {"initial": 5.0, "maximum": 1.0},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"max_attempts": -1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]

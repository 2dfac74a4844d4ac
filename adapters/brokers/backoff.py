"""Reconnect delays: exponential with full jitter, capped (sans-I/O)."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays for successive retries after a broker connection failed.

    The n-th delay is uniform in ``[base * 2**n / 2, base * 2**n]``, capped at ``cap``;
    :meth:`reset` after a success starts again from ``base``.

    >>> b = Backoff(base=0.1, cap=1.0, rng=random.Random(1))
    >>> delays = [b.next() for _ in range(6)]
    >>> 0.05 <= delays[0] <= 0.1 and all(0.5 <= d <= 1.0 for d in delays[4:])
    True
    >>> b.reset(); b.attempts
    0
    """

    def __init__(
        self, base: float = 0.05, cap: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt (seconds)."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return float(ceiling * (0.5 + 0.5 * self._rng.random()))

    def reset(self) -> None:
        self.attempts = 0

"""Reconnect policy (sans-I/O): exponential backoff with jitter, bounded, seedable."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays between reconnect attempts: ``initial * factor**n`` capped at ``maximum``,
    each shortened by a random fraction up to ``jitter`` so that many clients dropped at
    once do not reconnect in lockstep. ``max_attempts`` (``None``: forever) bounds the
    consecutive failures; :meth:`reset` after a connection that delivered data.

    >>> b = Backoff(initial=1.0, maximum=5.0, jitter=0.0, max_attempts=5)
    >>> [b.next_delay() for _ in range(6)]
    [1.0, 2.0, 4.0, 5.0, 5.0, None]
    >>> b.reset(); b.next_delay()
    1.0
    >>> Backoff(seed=7).next_delay() == Backoff(seed=7).next_delay()
    True
    """

    initial: float = 0.25
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None
    seed: int | None = None
    attempts: int = field(default=0, init=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum:
            raise ValueError("need 0 <= initial <= maximum")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction between 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0 or None")
        self._rng = random.Random(self.seed)

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` once attempts are used up."""
        if self.max_attempts is not None and self.attempts >= self.max_attempts:
            return None
        # min() before pow() overflows: cap the exponent once the ceiling is reached.
        n = min(self.attempts, 64)
        self.attempts += 1
        base = min(self.maximum, self.initial * self.factor**n)
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Start over from ``initial`` (call once a connection proved healthy)."""
        self.attempts = 0

    def fresh(self) -> Backoff:
        """An independent copy with the same settings (one per subscription)."""
        return Backoff(
            self.initial, self.maximum, self.factor, self.jitter, self.max_attempts, self.seed
        )

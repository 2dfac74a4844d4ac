"""Retry delays (sans-I/O): exponential, capped, jittered, optionally bounded in count.

The one backoff policy of rxstreams: :func:`operators.retry` waits with it, the NATS and
Redis brokers reconnect with it, and the HTTP/WebSocket client reconnects and re-publishes
with it. It decides only *how long* to wait; the caller sleeps (or schedules a timer).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]

_MAX_EXPONENT = 64  # min() before pow() overflows: the ceiling is reached long before


@dataclass
class Backoff:
    """Delays between attempts: ``initial * factor**n`` capped at ``maximum``, each
    shortened by a random fraction up to ``jitter`` so that many clients dropped at once
    do not retry in lockstep. ``max_attempts`` (``None``: forever) bounds the consecutive
    failures; :meth:`reset` after a success starts again from ``initial``.

    ``seed`` makes the delays reproducible; ``rng`` shares a caller's generator instead.

    >>> b = Backoff(initial=1.0, maximum=5.0, jitter=0.0, max_attempts=5)
    >>> [b.next_delay() for _ in range(6)]
    [1.0, 2.0, 4.0, 5.0, 5.0, None]
    >>> b.reset(); b.next_delay()
    1.0
    >>> Backoff(seed=7).next_delay() == Backoff(seed=7).next_delay()
    True

    With the default ``jitter=0.5`` the n-th delay lies in ``[ceiling / 2, ceiling]``:

    >>> d = Backoff(initial=0.1, maximum=1.0, seed=1).delays(6)
    >>> 0.05 <= d[0] <= 0.1 and all(0.5 <= x <= 1.0 for x in d[4:])
    True
    """

    initial: float = 0.25
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None
    seed: int | None = None
    rng: random.Random | None = field(default=None, repr=False, compare=False)
    attempts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum:
            raise ValueError("need 0 <= initial <= maximum")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction between 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0 or None")
        self._random = (self.rng or random.Random(self.seed)).random

    def ceiling(self, attempt: int) -> float:
        """The longest delay before retry number ``attempt`` (0-based), jitter aside.

        >>> [Backoff(initial=0.5, maximum=3.0).ceiling(n) for n in range(4)]
        [0.5, 1.0, 2.0, 3.0]
        """
        return min(self.maximum, self.initial * self.factor ** min(attempt, _MAX_EXPONENT))

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` once attempts are used up."""
        if self.max_attempts is not None and self.attempts >= self.max_attempts:
            return None
        top = self.ceiling(self.attempts)
        self.attempts += 1
        return top * (1.0 - self.jitter * self._random())

    def next(self) -> float:
        """The next delay of a policy without ``max_attempts`` (raises once one runs out)."""
        delay = self.next_delay()
        if delay is None:
            raise RuntimeError(f"no attempts left after {self.attempts}")
        return delay

    def delays(self, count: int) -> list[float]:
        """The next ``count`` delays (fewer if ``max_attempts`` runs out first)."""
        out = []
        for _ in range(count):
            delay = self.next_delay()
            if delay is None:
                break
            out.append(delay)
        return out

    def reset(self) -> None:
        """Start over from ``initial`` (call once an attempt succeeded)."""
        self.attempts = 0

    def fresh(self) -> Backoff:
        """An independent copy with the same settings (one per subscription); it shares
        ``rng`` when one was given, else restarts from ``seed``."""
        return Backoff(
            self.initial, self.maximum, self.factor, self.jitter, self.max_attempts, self.seed,
            self.rng,
        )  # fmt: skip

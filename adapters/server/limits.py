"""Per-connection limits, free of I/O: a token bucket for the publish rate.

Time is passed in (``now``, seconds), so tests drive it without sleeping.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; :meth:`take` spends them.

    >>> b = TokenBucket(rate=10, burst=2, now=0.0)
    >>> b.take(1, 0.0), b.take(1, 0.0), b.take(1, 0.0), b.take(1, 0.1)
    (True, True, False, True)
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, n: float, now: float) -> bool:
        """Spend ``n`` tokens if available (all or none); False means rate limited."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if n <= self.tokens:
            self.tokens -= n
            return True
        return False

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

    def wait(self, n: float, now: float) -> float:
        """Seconds from ``now`` until ``n`` tokens are available (``inf`` if ``n > burst``).

        What a refused publisher is told in ``Retry-After``.

        >>> b = TokenBucket(rate=2, burst=2, now=0.0)
        >>> b.take(2, 0.0), b.wait(1, 0.0), b.wait(2, 0.5), b.wait(3, 0.0)
        (True, 0.5, 0.5, inf)
        """
        if n > self.burst:
            return float("inf")
        tokens = self.tokens
        if now > self.stamp:
            tokens = min(self.burst, tokens + (now - self.stamp) * self.rate)
        return max(0.0, (n - tokens) / self.rate)

"""The brokers' reconnect and re-publish delays: the shared :class:`operators.Backoff`
with short steps (a broker on this host or in this data centre comes back quickly).

``Backoff`` is importable from here still; it is the one policy of the whole toolkit.
"""

from __future__ import annotations

import random
from typing import Final

from operators.backoff import Backoff

__all__ = ["RECONNECT_INITIAL", "RECONNECT_MAXIMUM", "Backoff", "reconnect_backoff"]

RECONNECT_INITIAL: Final = 0.05
RECONNECT_MAXIMUM: Final = 2.0


def reconnect_backoff(rng: random.Random | None = None) -> Backoff:
    """Delays for successive retries after a broker connection or publish failed: the n-th
    in ``[ceiling / 2, ceiling]`` with ``ceiling = min(2.0, 0.05 * 2**n)``, forever.

    >>> b = reconnect_backoff(random.Random(1))
    >>> d = [b.next() for _ in range(7)]
    >>> 0.025 <= d[0] <= 0.05 and all(1.0 <= x <= 2.0 for x in d[6:])
    True
    """
    return Backoff(initial=RECONNECT_INITIAL, maximum=RECONNECT_MAXIMUM, jitter=0.5, rng=rng)

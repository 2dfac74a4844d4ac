"""Errors the networked brokers raise to callers (see :mod:`streams.errors` for the tree)."""

from __future__ import annotations

from streams import PublishError
from streams.errors import InvalidInput

__all__ = ["BrokerURLError", "PublishError"]

# ``adapters.brokers.PublishError`` was a subclass of ``streams.PublishError``; it is now the
# same class (one name, one meaning), still a ``RuntimeError``. Kept importable from here.


class BrokerURLError(InvalidInput):
    """A ``--broker`` URL that cannot be used; the message says what is wrong.

    >>> issubclass(BrokerURLError, ValueError)
    True
    """

"""Errors the networked brokers raise to callers."""

from __future__ import annotations

from streams import PublishError as _ProtocolPublishError

__all__ = ["BrokerURLError", "PublishError"]


class PublishError(_ProtocolPublishError, RuntimeError):
    """The broker did not acknowledge a publish: the event may not be stored.

    The :class:`streams.PublishError` of the networked brokers (kept here so existing
    imports work; still a ``RuntimeError`` as before). Raised by ``apublish`` and
    ``apublish_many`` for every broker-side failure, after their retries; ``committed``
    lists what a batch stored anyway. The caller decides whether to retry (NATS
    deduplicates by event id, Redis may then store the event twice) or to report it.

    >>> import streams
    >>> err = PublishError("not acknowledged", committed=[streams.Position("e", 1)])
    >>> isinstance(err, streams.PublishError), err.committed
    (True, [Position(epoch='e', offset=1)])
    """


class BrokerURLError(ValueError):
    """A ``--broker`` URL that cannot be used; the message says what is wrong."""

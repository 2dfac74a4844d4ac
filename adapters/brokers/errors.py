"""Errors the networked brokers raise to callers."""

from __future__ import annotations

__all__ = ["BrokerURLError", "PublishError"]


class PublishError(RuntimeError):
    """The broker did not acknowledge a publish: the event may not be stored.

    Raised by ``apublish`` after its retries; the caller decides whether to retry (NATS
    deduplicates by event id, Redis may then store the event twice) or to report it.
    """


class BrokerURLError(ValueError):
    """A ``--broker`` URL that cannot be used; the message says what is wrong."""

"""Networked brokers behind :class:`streams.Broker`: NATS JetStream and Redis Streams.

``from_url`` picks the broker from a ``--broker`` URL; the NATS and Redis clients are
imported only when such a broker is asked for, so ``import adapters.brokers`` stays light.

>>> from_url("memory://")  # doctest: +ELLIPSIS
<streams.memory.MemoryBroker object at ...>
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams import MemoryBroker

from .errors import BrokerURLError, PublishError
from .url import BrokerSettings, parse_broker_url

if TYPE_CHECKING:
    from .nats_broker import NatsBroker
    from .redis_broker import RedisBroker

__all__ = [
    "BrokerSettings",
    "BrokerURLError",
    "NatsBroker",
    "PublishError",
    "RedisBroker",
    "from_url",
    "parse_broker_url",
]


def from_url(url: str) -> MemoryBroker | NatsBroker | RedisBroker:
    """The broker a URL names: ``memory://`` (or ``""``), ``nats://host:port``,
    ``redis://host:port/db``; options in the query string (see :mod:`.url`).

    Networked brokers connect on first use (or ``await broker.connect()``).

    >>> from_url("nats://127.0.0.1:4222?stream=chat").stream
    'chat'
    """
    settings = parse_broker_url(url)
    if settings.kind == "nats":
        from .nats_broker import NatsBroker

        return NatsBroker.from_settings(settings)
    if settings.kind == "redis":
        from .redis_broker import RedisBroker

        return RedisBroker.from_settings(settings)
    return MemoryBroker(settings.retention)


def __getattr__(name: str) -> Any:
    if name == "NatsBroker":
        from .nats_broker import NatsBroker

        return NatsBroker
    if name == "RedisBroker":
        from .redis_broker import RedisBroker

        return RedisBroker
    raise AttributeError(name)

"""Parse ``--broker`` URLs into settings (sans-I/O).

``memory://`` (or an empty string) is the embedded broker; ``nats://host:port`` and
``redis://host:port/db`` the networked ones. Options ride in the query string:
``stream`` (stream or key name), retention limits ``max_events``, ``max_bytes``,
``max_age`` (seconds), ``max_per_subject`` (each a number or ``none``), and for
competing consumers ``ack_wait`` (seconds before an unacknowledged event is handed to
another worker).

Redis cannot enforce ``max_bytes`` or ``max_per_subject`` (see
:mod:`.redis_decisions`): a ``redis://`` URL naming either (other than ``none``) is
refused, and without options it gets the Redis default (``max_per_subject`` none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from streams import Retention

from .errors import BrokerURLError
from .redis_decisions import REDIS_DEFAULT_RETENTION, UnsupportedRetention, check_retention

__all__ = ["BrokerSettings", "parse_broker_url"]

_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_LIMITS = ("max_events", "max_bytes", "max_age", "max_per_subject")
_KNOWN = {"stream", "ack_wait", *_LIMITS}


@dataclass(frozen=True)
class BrokerSettings:
    """What a broker URL asks for."""

    kind: str  # "memory" | "nats" | "redis"
    server: str = ""  # the URL without the query string
    stream: str = "rxstreams"
    retention: Retention = field(default_factory=Retention)
    ack_wait: float = 30.0


def _number(name: str, text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise BrokerURLError(f"{name}={text!r}: expected a number or 'none'") from None
    if value <= 0:
        raise BrokerURLError(f"{name}={text!r}: must be positive")
    return value


def parse_broker_url(url: str) -> BrokerSettings:
    """Settings for a broker URL; raises :class:`BrokerURLError` on anything unknown.

    >>> s = parse_broker_url("redis://127.0.0.1:6379/0?stream=chat&max_events=500")
    >>> s.kind, s.server, s.stream, s.retention.max_events
    ('redis', 'redis://127.0.0.1:6379/0', 'chat', 500)
    >>> parse_broker_url("").kind
    'memory'
    >>> parse_broker_url("redis://127.0.0.1:6379/0").retention.max_per_subject is None
    True
    >>> parse_broker_url("redis://h:6379/0?max_per_subject=10")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adapters.brokers.errors.BrokerURLError: redis://h:6379/0?max_per_subject=10: Redis cannot ...
    >>> parse_broker_url("kafka://x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adapters.brokers.errors.BrokerURLError: unsupported broker URL 'kafka://x': ...
    """
    if not url or url in ("memory", "memory://"):
        return BrokerSettings("memory")
    parts = urlsplit(url)
    kind = parts.scheme
    if kind not in ("memory", "nats", "redis") or (kind != "memory" and not parts.netloc):
        raise BrokerURLError(
            f"unsupported broker URL {url!r}: use memory://, nats://host:port or "
            "redis://host:port/db"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise BrokerURLError(f"unknown broker option(s) {unknown}; known: {sorted(_KNOWN)}")
    stream = options.get("stream", "rxstreams")
    if not _NAME.fullmatch(stream):
        raise BrokerURLError(f"stream={stream!r}: use 1-64 letters, digits, '_' or '-'")
    limits: dict[str, float | None] = {}
    for name in _LIMITS:
        if name in options:
            limits[name] = _number(name, options[name])
    defaults = REDIS_DEFAULT_RETENTION if kind == "redis" else Retention()
    retention = Retention(
        max_events=_int(limits.get("max_events", defaults.max_events)),
        max_bytes=_int(limits.get("max_bytes", defaults.max_bytes)),
        max_age=limits.get("max_age", defaults.max_age),
        max_per_subject=_int(limits.get("max_per_subject", defaults.max_per_subject)),
    )
    if kind == "redis":
        try:
            check_retention(retention)
        except UnsupportedRetention as exc:
            raise BrokerURLError(f"{url}: {exc}") from None
    ack_wait = _number("ack_wait", options.get("ack_wait", "30")) or 30.0
    server = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return BrokerSettings(kind, server, stream, retention, ack_wait)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)

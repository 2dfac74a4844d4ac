"""Server configuration: one frozen dataclass, defaults safe for a public endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from streams import OverflowPolicy

from .auth import AuthConfig

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """Everything :func:`adapters.server.create_app` can be told.

    ``overflow`` is the policy applied to a client whose queue is full (``disconnect``,
    ``drop_oldest`` or ``latest_only``); choose a different one per route by mounting
    several apps. ``origins=None`` accepts any WebSocket ``Origin``.

    >>> ServerConfig(overflow="latest_only").overflow.value
    'latest_only'
    """

    auth: AuthConfig | None = None
    overflow: OverflowPolicy | str = OverflowPolicy.DISCONNECT
    client_max_events: int = 1000
    client_max_bytes: int = 1 << 20
    max_body_bytes: int = 1 << 20
    max_message_bytes: int = 64 * 1024
    max_subscriptions: int = 100
    publish_rate: float = 1000.0  # events per second per connection
    publish_burst: float = 1000.0
    max_connections: int = 10_000  # streaming connections: SSE, NDJSON, long-poll, WebSocket
    overloaded_retry_after: float = 1.0  # Retry-After (seconds) of a 503 ``overloaded``
    origins: tuple[str, ...] | None = None
    heartbeat: float = 15.0  # SSE/NDJSON heartbeat period, seconds
    ws_ping: float | None = 20.0  # WebSocket ping period; no pong within half of it closes
    ws_close_timeout: float = 2.0
    write_buffer: int | None = None  # transport high-water mark, bytes (asyncio: 64 KiB)
    socket_send_buffer: int | None = None  # SO_SNDBUF for streaming connections
    poll_timeout: float = 25.0
    poll_max_timeout: float = 60.0
    poll_limit: int = 100
    title: str = "rxstreams"

    def __post_init__(self) -> None:
        policy = OverflowPolicy(self.overflow)
        if policy not in (
            OverflowPolicy.DISCONNECT,
            OverflowPolicy.DROP_OLDEST,
            OverflowPolicy.LATEST_ONLY,
        ):
            raise ValueError("overflow must be disconnect, drop_oldest or latest_only")
        object.__setattr__(self, "overflow", policy)
        for name in ("client_max_events", "max_body_bytes", "max_message_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

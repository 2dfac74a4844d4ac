"""Server configuration: one frozen dataclass, defaults safe for a public endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from streams import OverflowPolicy

from .auth import AuthConfig
from .routes import Routes, choose_policy, client_policy, parse_routes

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """Everything :func:`adapters.server.create_app` can be told.

    ``overflow`` is the policy applied to a client whose queue is full (``disconnect``,
    ``drop_oldest`` or ``latest_only``). ``overflow_routes`` maps subscription patterns to
    other policies (the first route covering a subscription's pattern applies), and
    ``allowed_overflow`` lists the policies a client may ask for itself
    (see :mod:`adapters.server.routes`). ``origins=None`` accepts any WebSocket ``Origin``.

    >>> cfg = ServerConfig(overflow_routes={"chat.*.typing": "latest_only"})
    >>> cfg.policy_for("chat.lobby.typing").value, cfg.policy_for("chat.>").value
    ('latest_only', 'disconnect')
    """

    auth: AuthConfig | None = None
    overflow: OverflowPolicy | str = OverflowPolicy.DISCONNECT
    overflow_routes: Mapping[str, OverflowPolicy | str] | Routes = ()
    allowed_overflow: tuple[OverflowPolicy | str, ...] = ()
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
    # Leading-edge write delay (Centrifugo's write_delay, minus the latency when quiet):
    # the first event after a quiet period is written at the end of the loop iteration
    # that received it; events that follow within ``write_delay`` seconds of the last
    # write wait until the delay has passed and then travel together, one write per
    # client. A quiet stream (a chat, a 20/s ticker) pays nothing; a busy one pays at most
    # the delay, and writes once per client per window instead of once per event: 1,000
    # WebSocket clients, events one per loop iteration, cost ~0.04x the CPU per delivery
    # of a naive aiohttp broadcast with 5 ms, ~0.86x with 0 (benchmarks/fanout.py). Events
    # further apart than the delay (a 20/s ticker: 50 ms) are never gathered: each costs
    # one write per client, the floor (mostly the kernel's TCP send). 0 writes at the end
    # of every iteration that received events.
    write_delay: float = 0.005
    write_buffer: int | None = None  # transport high-water mark, bytes (asyncio: 64 KiB)
    socket_send_buffer: int | None = None  # SO_SNDBUF for streaming connections
    poll_timeout: float = 25.0
    poll_max_timeout: float = 60.0
    poll_limit: int = 100
    title: str = "rxstreams"
    broker_health_timeout: float = 2.0  # /healthz waits this long for the broker's state
    # A connection that has not sent a whole request head this long after it opened (or
    # after its previous response) is closed; see adapters.server.serving.EdgeRunner.
    header_timeout: float = 10.0
    body_timeout: float = 30.0  # an ingest body not read whole in time answers 408

    def __post_init__(self) -> None:
        object.__setattr__(self, "overflow", client_policy(self.overflow))
        object.__setattr__(self, "overflow_routes", parse_routes(self.overflow_routes))
        allowed = tuple(client_policy(p, "allowed_overflow") for p in self.allowed_overflow)
        object.__setattr__(self, "allowed_overflow", allowed)
        if not 0 <= self.write_delay <= 1:
            raise ValueError("write_delay must be between 0 and 1 second")
        for name in ("client_max_events", "max_body_bytes", "max_message_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

    def policy_for(
        self, pattern: str, requested: Any = None, ref: str | None = None
    ) -> OverflowPolicy:
        """The overflow policy of a subscription to ``pattern``; ``requested`` is the
        client's own choice (``bad_request`` unless in ``allowed_overflow``)."""
        return choose_policy(
            pattern,
            requested,
            cast(OverflowPolicy, self.overflow),
            cast(Routes, self.overflow_routes),
            cast("tuple[OverflowPolicy, ...]", self.allowed_overflow),
            ref,
        )

"""Running the app on a socket with the edge's defences: :class:`EdgeRunner`.

``web.AppRunner`` leaves three things open that a server on the internet needs:

- **Slow headers** (slowloris): aiohttp waits ``keepalive_timeout`` (an hour by default)
  for a request's headers. :class:`EdgeRunner` sets it to ``ServerConfig.header_timeout``:
  a connection that has not sent a whole request head that long after it opened (or after
  its previous response) is closed. Idle keep-alive connections close after as long.
  Slow *bodies* are the ingest handler's: ``ServerConfig.body_timeout``, answered ``408``.
- **Connections that are not yet requests** count against ``ServerConfig.max_connections``
  with the streaming ones: beyond it a new connection is answered ``503 overloaded`` and
  closed at once, and streaming requests get ``503`` while half-open connections hold
  their place (:class:`Edge`).
- **Errors answered before the app** (a request aiohttp cannot parse, an exception that
  escaped every handler) are the JSON error object too, not ``text/plain``.

aiohttp has no public hook for the last two (the protocol's ``handle_error`` and the
runner's server factory ``_make_server``): they are overridden here, on the aiohttp 3.x
pinned in ``pyproject.toml``; ``tests/server/test_edge.py`` fails loudly if they change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .config import ServerConfig
from .errors import ProtocolError
from .middleware import error_for_status

__all__ = ["EDGE", "Edge", "EdgeRunner", "pending_connections", "serve_forever_settings"]

log = logging.getLogger(__name__)
_REFUSED_LINGER = 0.5  # seconds a refused connection stays open for its answer to be read


class Edge:
    """Connections the app cannot see yet: TCP connections without a whole request.

    ``busy`` reports the streaming connections (the hub's count); a new connection is
    refused when ``pending + busy() >= limit``.

    >>> edge = Edge(2, lambda: 1)
    >>> edge.admits(), edge.opened(), edge.admits()
    (True, None, False)
    """

    __slots__ = ("busy", "limit", "pending", "refused")

    def __init__(self, limit: int, busy: Callable[[], int] = lambda: 0) -> None:
        self.limit = limit
        self.busy = busy
        self.pending = 0
        self.refused = 0

    def admits(self) -> bool:
        return self.pending + self.busy() < self.limit

    def opened(self) -> None:
        self.pending += 1

    def requested(self) -> None:
        self.pending -= 1


EDGE = web.AppKey("rxstreams_edge", Edge)


def _overloaded_bytes(retry_after: float) -> bytes:
    err = ProtocolError("overloaded", "connection limit reached", retry_after=retry_after)
    body = err.body()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Retry-After: {err.headers()['Retry-After']}\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _error_body(status: int, message: str | None) -> bytes:
    """The JSON error aiohttp's own answer stands for: the first line of its parser's
    message (never a traceback); a 5xx is ``internal`` without details.

    >>> _error_body(400, "Invalid method encountered:\\n\\n  b'GARBAGE'")
    b'{"error":{"code":"bad_request","message":"Invalid method encountered:"}}'
    >>> _error_body(500, "Traceback ...")
    b'{"error":{"code":"internal","message":"internal server error"}}'
    """
    if status >= 500:
        return ProtocolError("internal", "internal server error").body()
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    text = (message or "").splitlines()[0].strip() if message else ""
    return error_for_status(status, text or phrase).body()


class _EdgeProtocol(RequestHandler):
    """aiohttp's HTTP protocol, counting itself in :class:`Edge` until its first request
    and answering parse errors and escaped exceptions as JSON."""

    def __init__(self, manager: _EdgeServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.edge = manager.edge
        self.edge_pending = False
        self.edge_refused = False
        self.retry_after = manager.retry_after

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        edge = self.edge
        if not edge.admits():
            # Answer at once and ignore the request; closing a moment later lets the
            # client read the answer (closing at once could reset it away).
            edge.refused += 1
            self.edge_refused = True
            write = getattr(transport, "write", None)
            if write is not None:
                write(_overloaded_bytes(self.retry_after))
            asyncio.get_running_loop().call_later(_REFUSED_LINGER, transport.close)
            return
        edge.opened()
        self.edge_pending = True

    def data_received(self, data: bytes) -> None:
        if not self.edge_refused:
            super().data_received(data)

    def request_started(self) -> None:
        if self.edge_pending:
            self.edge_pending = False
            self.edge.requested()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.request_started()  # no longer pending either way
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if already sent
        resp = web.Response(
            status=status, body=_error_body(status, message), content_type="application/json"
        )
        resp.force_close()
        return resp


class _EdgeServer(web.Server):
    """aiohttp's connection factory, making :class:`_EdgeProtocol` connections."""

    def __init__(
        self,
        handler: Any,
        *,
        edge: Edge,
        retry_after: float,
        request_factory: Any,
        handler_cancellation: bool,
        loop: asyncio.AbstractEventLoop,
        **kwargs: Any,
    ) -> None:
        self.edge = edge
        self.retry_after = retry_after
        self.edge_loop = loop
        self.edge_kwargs = kwargs
        inner_factory = request_factory

        def make_request(message: Any, payload: Any, protocol: Any, *args: Any) -> Any:
            if isinstance(protocol, _EdgeProtocol):
                protocol.request_started()
            return inner_factory(message, payload, protocol, *args)

        super().__init__(
            handler,
            request_factory=make_request,
            handler_cancellation=handler_cancellation,
            loop=loop,
            **kwargs,
        )

    def __call__(self) -> RequestHandler:
        return _EdgeProtocol(self, loop=self.edge_loop, **self.edge_kwargs)


def pending_connections(request: web.BaseRequest) -> int:
    """How many connections of ``request``'s server have not sent a request yet (0 when
    not served by :class:`EdgeRunner`, which alone counts them; also for a mounted app)."""
    protocol = request.protocol
    return protocol.edge.pending if isinstance(protocol, _EdgeProtocol) else 0


class EdgeRunner(web.AppRunner):
    """``web.AppRunner`` with the header timeout, the count of connections that are not
    yet requests, and JSON parse errors (see the module docstring).

    ``config`` defaults to the app's own :class:`ServerConfig` (an app made by
    :func:`~adapters.server.create_app`), else the defaults.

    >>> from adapters.server import create_app
    >>> runner = EdgeRunner(create_app())
    >>> runner.edge.limit
    10000
    """

    def __init__(
        self, app: web.Application, *, config: ServerConfig | None = None, **kwargs: Any
    ) -> None:
        from .app import CONFIG  # the app module imports this one's EDGE key

        cfg = config or app.get(CONFIG) or ServerConfig()
        kwargs.setdefault("keepalive_timeout", cfg.header_timeout)
        super().__init__(app, **kwargs)
        self.config = cfg
        found = app.get(EDGE)
        self.edge = found if found is not None else Edge(cfg.max_connections)

    async def _make_server(self) -> web.Server:
        inner = await super()._make_server()
        return _EdgeServer(
            inner.request_handler,
            edge=self.edge,
            retry_after=self.config.overloaded_retry_after,
            request_factory=inner.request_factory,
            handler_cancellation=inner.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **inner._kwargs,  # aiohttp has no public accessor for the handler settings
        )


def serve_forever_settings(config: ServerConfig) -> dict[str, Any]:
    """The ``web.run_app``/``AppRunner`` keyword arguments carrying the header timeout, for
    code that cannot use :class:`EdgeRunner` (it then lacks the other two defences).

    >>> serve_forever_settings(ServerConfig(header_timeout=5))
    {'keepalive_timeout': 5}
    """
    return {"keepalive_timeout": config.header_timeout}

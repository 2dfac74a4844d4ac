"""The aiohttp shell: routes, auth and limits around the sans-I/O modules.

>>> from streams import MemoryBroker
>>> app = create_app(MemoryBroker())
>>> sorted({r.resource.canonical for r in app.router.routes()})  # doctest: +NORMALIZE_WHITESPACE
['/asyncapi.json', '/events/{pattern}', '/events/{subject}', '/healthz', '/metrics',
 '/openapi.json', '/poll/{pattern}', '/ws']
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from reactivex import Observable

from streams import (
    Broker,
    Event,
    GapError,
    MemoryBroker,
    OverflowPolicy,
    Position,
    PublishError,
    Retention,
    SubjectError,
    to_async_iterator,
    validate_pattern,
    validate_subject,
)

from .asyncapi import asyncapi_document
from .auth import ANYONE, Claims, allows, authorize, token_from
from .config import ServerConfig
from .delivery import Hub, StreamClient, WsClient, live_start, subscribe_client
from .disconnect import on_disconnect
from .errors import ProtocolError
from .framing import HEARTBEAT_NDJSON, HEARTBEAT_SSE, ndjson_chunk, sse_chunk
from .ingest import binary_attributes, binary_event, check_media_type, media_type, parse_body
from .keys import TokenVerifier
from .limits import TokenBucket
from .middleware import json_errors
from .openapi import openapi_document
from .routes import connection_policy
from .serving import EDGE, Edge, pending_connections
from .wsproto import Auth, Publish, Subscribe, Unsubscribe, parse_message, parse_position

__all__ = ["BROKER", "CONFIG", "HUB", "create_app", "expose"]

BROKER = web.AppKey("rxstreams_broker", Broker)
CONFIG = web.AppKey("rxstreams_config", ServerConfig)
HUB = web.AppKey("rxstreams_hub", Hub)
_OWNED = web.AppKey("rxstreams_owns_broker", bool)
_BUCKETS = web.AppKey("rxstreams_buckets", weakref.WeakKeyDictionary)
_VERIFIER = web.AppKey("rxstreams_verifier", TokenVerifier)

JSON_CT = "application/json"
NDJSON_CT = "application/x-ndjson"
SSE_CT = "text/event-stream"
BATCH_CT = "application/cloudevents-batch+json"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
log = logging.getLogger(__name__)


def _error(exc: ProtocolError, hub: Hub) -> web.Response:
    hub.metrics.rejected.labels(exc.code).inc()
    return web.Response(
        status=exc.status, body=exc.body(), content_type=JSON_CT, headers=exc.headers()
    )


async def _claims(request: web.Request) -> Claims:
    verifier = request.app.get(_VERIFIER)
    if verifier is None:
        return ANYONE
    token = token_from(request.headers.get("Authorization"), request.query.get("token"))
    return await verifier.verify(token)


def _on_expiry(claims: Claims, callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """Call ``callback`` when the token behind ``claims`` expires (never, without ``exp``)."""
    if claims.exp is None:
        return None
    delay = max(0.0, claims.exp - time.time())
    return asyncio.get_running_loop().call_later(delay, callback)


def _expired() -> ProtocolError:
    return ProtocolError(
        "token_expired", "the token expired: reconnect (or send an auth op) with a fresh one"
    )


def _end_expired_stream(client: StreamClient) -> None:
    """At the token's expiry an SSE/NDJSON stream says so and ends (the client resumes
    with ``Last-Event-ID`` and a fresh token)."""
    client.unsubscribe_all()
    client.send_control(_expired().ws_message())
    client.hub.metrics.rejected.labels("token_expired").inc()
    client.hub.loop.create_task(client.shutdown())


def _pattern(text: str, field: str = "pattern") -> str:
    try:
        return validate_pattern(text)
    except SubjectError as exc:
        raise ProtocolError("bad_subject", str(exc), field=field) from None


def _admit(hub: Hub, request: web.BaseRequest) -> None:
    cfg = hub.config
    if hub.closing:
        raise ProtocolError(
            "overloaded", "server is shutting down", retry_after=cfg.overloaded_retry_after
        )
    pending = pending_connections(request)  # connections not yet requests (EdgeRunner)
    if hub.connections + pending >= cfg.max_connections:
        raise ProtocolError(
            "overloaded",
            f"connection limit of {cfg.max_connections} reached",
            retry_after=cfg.overloaded_retry_after,
        )


def _spend(bucket: TokenBucket, n: int, cfg: ServerConfig, ref: str | None = None) -> None:
    """Take ``n`` publish tokens or raise ``rate_limited`` saying when to retry; a batch
    larger than the burst can never pass, so it is ``too_large`` instead."""
    now = time.monotonic()
    if bucket.take(n, now):
        return
    if n > cfg.publish_burst:
        raise ProtocolError(
            "too_large",
            f"batch of {n} events exceeds the publish burst of {cfg.publish_burst:g}",
            ref=ref,
            limit=cfg.publish_burst,
        )
    raise ProtocolError(
        "rate_limited",
        f"publish rate above {cfg.publish_rate:g} events/s (burst {cfg.publish_burst:g})",
        ref=ref,
        retry_after=bucket.wait(n, now),
    )


def _tune(transport: Any, cfg: ServerConfig) -> None:
    """Apply the configured socket send buffer and transport high-water mark."""
    if transport is None:
        return
    if cfg.socket_send_buffer is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.socket_send_buffer)
    if cfg.write_buffer is not None:
        transport.set_write_buffer_limits(high=cfg.write_buffer)


def _bucket(request: web.Request) -> TokenBucket:
    """The publish-rate bucket of this TCP connection (keep-alive requests share it)."""
    cfg = request.app[CONFIG]
    buckets = request.app[_BUCKETS]
    key = request.transport
    bucket = buckets.get(key)
    if bucket is None:
        bucket = buckets[key] = TokenBucket(cfg.publish_rate, cfg.publish_burst, time.monotonic())
    return bucket


# -- GET /events/{pattern} --------------------------------------------------------------
async def stream_events(request: web.Request) -> web.StreamResponse:
    """SSE (default) or NDJSON (``Accept: application/x-ndjson``) of a pattern."""
    hub = request.app[HUB]
    cfg = hub.config
    try:
        pattern = _pattern(request.match_info["pattern"])
        claims = await _claims(request)
        authorize(claims, "subscribe", pattern)
        raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        since = parse_position(raw, "last_event_id") if raw else None
        policy = cfg.policy_for(pattern, request.query.get("overflow"))
        _admit(hub, request)
        live_from = None if since is not None else await _live_from(request.app[BROKER], cfg)
    except ProtocolError as exc:
        return _error(exc, hub)
    ndjson = NDJSON_CT in request.headers.get("Accept", "")
    resp = web.StreamResponse(
        headers={"Content-Type": NDJSON_CT if ndjson else SSE_CT, **STREAM_HEADERS}
    )
    await resp.prepare(request)
    _tune(request.transport, cfg)
    name = "ndjson" if ndjson else "sse"
    client = StreamClient(hub, policy, resp, request, name)
    hub.connections += 1
    hub.add(client)
    on_disconnect(request, client.lost)
    expiry = _on_expiry(claims, lambda: _end_expired_stream(client))
    try:
        subscribe_client(client, request.app[BROKER], None, pattern, since, None, live_from)
        if ndjson:
            await client.run(ndjson_chunk, HEARTBEAT_NDJSON)
        else:
            await resp.write(b"retry: 2000\n\n")
            await client.run(sse_chunk, HEARTBEAT_SSE)
    except ConnectionError:
        pass
    finally:
        if expiry is not None:
            expiry.cancel()
        hub.connections -= 1
        hub.remove(client)
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp


# -- GET /poll/{pattern} -----------------------------------------------------------------
def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ProtocolError("bad_request", f"{name} must be a number", field=name) from None
    if not low <= value <= high:
        raise ProtocolError("bad_request", f"{name} must be in [{low}, {high}]", field=name)
    return value


async def poll_events(request: web.Request) -> web.Response:
    """Long-poll: the events after ``after`` as a CloudEvents batch, or ``[]`` on timeout."""
    hub = request.app[HUB]
    cfg = hub.config
    broker = request.app[BROKER]
    try:
        pattern = _pattern(request.match_info["pattern"])
        authorize(await _claims(request), "subscribe", pattern)
        raw = request.query.get("after")
        after = parse_position(raw, "after") if raw else None
        timeout = _number(request, "timeout", cfg.poll_timeout, 0, cfg.poll_max_timeout)
        limit = int(_number(request, "limit", cfg.poll_limit, 1, 10_000))
        _admit(hub, request)
        if after is None:
            after = await _live_from(broker, cfg)
    except ProtocolError as exc:
        return _error(exc, hub)
    got: list[Event] = []
    ready = asyncio.Event()
    failure: list[BaseException] = []
    peer_gone: list[bool] = []

    def on_lost() -> None:
        peer_gone.append(True)
        disposable.dispose()
        ready.set()

    def on_next(e: Event) -> None:
        if len(got) < limit:
            got.append(e)
            ready.set()

    def on_error(exc: Exception) -> None:
        failure.append(exc)
        ready.set()

    hub.connections += 1
    disposable = broker.subscribe(pattern, after).subscribe(on_next, on_error, ready.set)
    on_disconnect(request, on_lost)
    try:
        if not got and not failure:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while not got and not failure and not hub.closing and not peer_gone:
                        ready.clear()
                        await ready.wait()
    finally:
        disposable.dispose()
        hub.connections -= 1
    if peer_gone:
        return web.Response(status=204)  # nobody is listening
    if failure and isinstance(failure[0], GapError):
        gap = failure[0]
        gone = ProtocolError(
            "gap",
            str(gap),
            requested=str(gap.requested),
            earliest=str(gap.earliest) if gap.earliest else None,
            reason=gap.reason,
        )
        return _error(gone, hub)
    headers = {"Cache-Control": "no-cache"}
    if got and got[-1].sequence:
        headers["X-Last-Event-ID"] = got[-1].sequence
    body = _batch(got, hub)
    return web.Response(body=body, content_type=BATCH_CT, headers=headers)


def _batch(events: list[Event], hub: Hub) -> bytes:
    """A CloudEvents batch of ``events``, skipping (and counting) any that cannot be
    encoded: ``X-Last-Event-ID`` still moves past them, so no poll answers 500 for ever."""
    parts: list[bytes] = []
    for e in events:
        try:
            parts.append(e.encode())
        except Exception as exc:
            hub.unencodable(e, exc)
    hub.count_out("poll", len(parts))
    return b"[" + b",".join(parts) + b"]"


# -- POST /events/{subject} --------------------------------------------------------------
def _unavailable(exc: Exception, cfg: ServerConfig, ref: str | None = None) -> ProtocolError:
    """A broker failure as ``503 unavailable``, naming what was stored anyway.

    >>> from streams import Position, PublishError
    >>> e = _unavailable(PublishError("down", [Position("e", 1)]), ServerConfig())
    >>> e.status, e.details["committed"], e.headers()
    (503, ['e-1'], {'Retry-After': '1'})
    """
    committed = [str(p) for p in getattr(exc, "committed", ())]
    if not isinstance(exc, PublishError):
        log.error("broker failed to publish", exc_info=exc)
    return ProtocolError(
        "unavailable",
        f"the broker did not store the events: {exc}",
        ref=ref,
        retry_after=cfg.overloaded_retry_after,
        committed=committed,
    )


async def _live_from(broker: Broker, cfg: ServerConfig, ref: str | None = None) -> Position | None:
    """:func:`~.delivery.live_start`, a broker failure answered as ``503 unavailable``."""
    try:
        return await live_start(broker)
    except Exception as exc:
        log.warning("broker did not answer where its log ends: %r", exc)
        raise ProtocolError(
            "unavailable",
            f"the broker is unavailable: {exc}",
            ref=ref,
            retry_after=cfg.overloaded_retry_after,
        ) from None


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ProtocolError("too_large", f"body larger than {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ProtocolError("too_large", f"body larger than {limit} bytes", limit=limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ProtocolError("request_timeout", f"body not received within {timeout:g} s") from None
    return b"".join(chunks)


async def ingest(request: web.Request) -> web.Response:
    """Publish one event, a JSON array or NDJSON; all or nothing; 202 with the positions."""
    hub = request.app[HUB]
    cfg = hub.config
    try:
        subject = request.match_info["subject"]
        try:
            validate_subject(subject)
        except SubjectError as exc:
            raise ProtocolError("bad_subject", str(exc), field="subject") from None
        authorize(await _claims(request), "publish", subject)
        content_type = request.headers.get("Content-Type")
        kind = media_type(content_type)
        binary = binary_attributes(request.headers.items())  # CloudEvents binary mode
        if binary is None:
            check_media_type(kind)
        body = await _read_body(request, cfg.max_body_bytes, cfg.body_timeout)
        if binary is not None:
            events = [binary_event(binary, body, content_type)]
        else:
            events = parse_body(body, kind, request.query.get("type", "rxstreams.event"))
        _spend(_bucket(request), len(events), cfg)
    except ProtocolError as exc:
        return _error(exc, hub)
    try:
        stored = await request.app[BROKER].apublish_many(subject, events)
    except Exception as exc:
        return _error(_unavailable(exc, cfg), hub)
    hub.metrics.events_in.labels("http").inc(len(events))
    positions = [str(p) for p in stored]
    return web.Response(
        status=202, body=orjson.dumps({"positions": positions}), content_type=JSON_CT
    )


# -- GET /ws -----------------------------------------------------------------------------
async def websocket(request: web.Request) -> web.StreamResponse:
    """The WebSocket endpoint: subscribe, unsubscribe and publish over JSON messages."""
    hub = request.app[HUB]
    cfg = hub.config
    try:
        origin = request.headers.get("Origin")
        if cfg.origins is not None and origin is not None and origin not in cfg.origins:
            raise ProtocolError("forbidden", f"Origin {origin!r} is not allowed")
        claims = await _claims(request)
        _admit(hub, request)
    except ProtocolError as exc:
        return _error(exc, hub)
    ws = web.WebSocketResponse(
        heartbeat=cfg.ws_ping,
        compress=False,
        max_msg_size=cfg.max_message_bytes * 4,
        timeout=cfg.ws_close_timeout,
    )
    hub.connections += 1
    try:
        await ws.prepare(request)
        _tune(request.transport, cfg)
        client = WsClient(hub, ws, OverflowPolicy(cfg.overflow), request)
        hub.add(client)
        session = _WsSession(request, client, claims)
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await session.handle(msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            session.close()
            hub.remove(client)
    finally:
        hub.connections -= 1
    return ws


class _WsSession:
    """Per-connection state: claims, subscriptions and the publish-rate bucket."""

    def __init__(self, request: web.Request, client: WsClient, claims: Claims) -> None:
        self.app = request.app
        self.client = client
        self.claims = claims
        cfg = request.app[CONFIG]
        self.cfg = cfg
        self.bucket = TokenBucket(cfg.publish_rate, cfg.publish_burst, time.monotonic())
        self.policies: dict[str, OverflowPolicy] = {}  # each subscription's own policy
        self.patterns: dict[str, str] = {}  # each subscription's pattern
        self.expiry = _on_expiry(claims, self._expired)

    def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()

    def _expired(self) -> None:
        """The token expired: a ``token_expired`` error op, then close 4401."""
        client = self.client
        if client.closing is not None:
            return
        client.unsubscribe_all()
        client.hub.metrics.rejected.labels("token_expired").inc()
        client.closing = client.hub.loop.create_task(self._close_expired())

    async def _close_expired(self) -> None:
        client = self.client
        # aiohttp's writer sends whole frames: this one cannot split a queued frame.
        with contextlib.suppress(ConnectionError, RuntimeError):
            await client.ws.send_str(_expired().ws_message().decode())
        await client.close(4401, b"token expired")

    async def reauth(self, op: Auth) -> None:
        """Replace the connection's token; subscriptions it no longer allows end."""
        verifier = self.app.get(_VERIFIER)
        try:
            claims = ANYONE if verifier is None else await verifier.verify(op.token)
        except ProtocolError as exc:
            exc.ref = op.ref
            raise
        if verifier is not None and self.claims.sub is not None and claims.sub != self.claims.sub:
            raise ProtocolError(
                "forbidden", "the new token is for another client (sub)", ref=op.ref
            )
        self.claims = claims
        self.close()
        self.expiry = _on_expiry(claims, self._expired)
        client = self.client
        for sid, pattern in list(self.patterns.items()):
            if not allows(claims, "subscribe", pattern):
                self._drop(sid)
                gone = {"op": "unsubscribed", "id": sid, "reason": "forbidden"}
                client.send_control(orjson.dumps(gone))
        authed: dict[str, Any] = {"op": "authed", "exp": claims.exp}
        if op.ref is not None:
            authed["ref"] = op.ref
        client.send_control(orjson.dumps(authed))

    def _drop(self, sid: str) -> bool:
        handle = self.client.subs.pop(sid, None)
        if handle is None:
            return False
        handle.dispose()
        self.policies.pop(sid, None)
        self.patterns.pop(sid, None)
        self._apply_policy()
        return True

    def _apply_policy(self) -> None:
        """One queue, one policy: the least lossy of the subscriptions' policies."""
        default = OverflowPolicy(self.cfg.overflow)
        self.client.set_policy(connection_policy(self.policies.values(), default))

    async def handle(self, data: str | bytes) -> None:
        try:
            await self._handle(data)
        except Exception:  # a bug must not cost the client its connection
            log.exception("unexpected error handling a WebSocket message")
            internal = ProtocolError("internal", "internal server error")
            self.client.hub.metrics.rejected.labels(internal.code).inc()
            self.client.send_control(internal.ws_message())

    async def _handle(self, data: str | bytes) -> None:
        client = self.client
        hub = client.hub
        try:
            size = len(data)  # the limit is in UTF-8 bytes; a character takes up to 4
            if isinstance(data, str) and size * 4 > self.cfg.max_message_bytes:
                size = len(data.encode())
            if size > self.cfg.max_message_bytes:
                raise ProtocolError(
                    "too_large",
                    f"message larger than {self.cfg.max_message_bytes} bytes",
                    limit=self.cfg.max_message_bytes,
                )
            op = parse_message(data)
            if isinstance(op, Subscribe):
                await self.subscribe(op)
            elif isinstance(op, Unsubscribe):
                if not self._drop(op.id):
                    raise ProtocolError("not_subscribed", f"no subscription {op.id!r}", ref=op.id)
                client.send_control(orjson.dumps({"op": "unsubscribed", "id": op.id}))
            elif isinstance(op, Publish):
                await self.publish(op)
            elif isinstance(op, Auth):
                await self.reauth(op)
        except ProtocolError as exc:
            hub.metrics.rejected.labels(exc.code).inc()
            client.send_control(exc.ws_message())

    async def subscribe(self, op: Subscribe) -> None:
        client = self.client
        if op.id in client.subs:
            raise ProtocolError("bad_request", f"subscription id {op.id!r} is in use", ref=op.id)
        if len(client.subs) >= self.cfg.max_subscriptions:
            raise ProtocolError(
                "too_many_subscriptions",
                f"at most {self.cfg.max_subscriptions} subscriptions per connection",
                ref=op.id,
            )
        try:
            authorize(self.claims, "subscribe", op.pattern)
        except ProtocolError as exc:
            exc.ref = op.id
            raise
        policy = self.cfg.policy_for(op.pattern, op.overflow, op.id)
        broker = self.app[BROKER]
        live_from = None if op.since is not None else await _live_from(broker, self.cfg, op.id)
        if op.id in client.subs:  # the same id subscribed again while we waited
            raise ProtocolError("bad_request", f"subscription id {op.id!r} is in use", ref=op.id)
        self.policies[op.id] = policy
        self.patterns[op.id] = op.pattern
        self._apply_policy()
        # Confirmed only once the start is known: every event stored from now on arrives.
        client.send_control(orjson.dumps({"op": "subscribed", "id": op.id}))
        subscribe_client(client, broker, op.id, op.pattern, op.since, op.filter, live_from)

    async def publish(self, op: Publish) -> None:
        try:
            authorize(self.claims, "publish", op.subject)
        except ProtocolError as exc:
            exc.ref = op.ref
            raise
        _spend(self.bucket, 1, self.cfg, op.ref)
        try:
            pos = await self.app[BROKER].apublish(op.subject, op.event)
        except Exception as exc:
            raise _unavailable(exc, self.cfg, op.ref) from None
        self.client.hub.metrics.events_in.labels("ws").inc()
        ack: dict[str, Any] = {"op": "ack", "position": str(pos)}
        if op.ref is not None:
            ack["ref"] = op.ref
        self.client.send_control(orjson.dumps(ack))


# -- small endpoints ---------------------------------------------------------------------
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this app's registry."""
    body = request.app[HUB].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def healthz(request: web.Request) -> web.Response:
    """``{"status": "ok", ...}`` with the broker's state; 503 ``shutting_down`` during
    graceful shutdown and 503 ``broker_unavailable`` while a networked broker does not
    answer (a load balancer sends clients to a server that can serve them)."""
    hub = request.app[HUB]
    broker = request.app[BROKER]
    state = await _broker_state(broker, hub.config.broker_health_timeout)
    status = "ok"
    if hub.closing:
        status = "shutting_down"
    elif not state.get("connected", True):
        status = "broker_unavailable"
    body = {
        "status": status,
        "connections": hub.connections,
        "broker": type(broker).__name__,
        "epoch": state.get("epoch") or broker.epoch,
        "broker_state": state,
    }
    if status != "ok":
        retry = {"Retry-After": str(max(1, math.ceil(hub.config.overloaded_retry_after)))}
        return web.Response(
            status=503, body=orjson.dumps(body), content_type=JSON_CT, headers=retry
        )
    return web.Response(body=orjson.dumps(body), content_type=JSON_CT)


async def _broker_state(broker: Broker, timeout: float) -> dict[str, Any]:
    """What a networked broker reports of itself (``health()``), bounded by ``timeout``."""
    health = getattr(broker, "health", None)
    if health is None:
        return {"connected": True, "epoch": broker.epoch}
    try:
        async with asyncio.timeout(timeout):
            return dict(await health())
    except Exception as exc:  # health() should not raise; a hang or a bug is "down"
        return {"connected": False, "error": repr(exc)}


async def asyncapi(request: web.Request) -> web.Response:
    """The AsyncAPI 3.0 document of this app, with this request's host and mount prefix."""
    cfg = request.app[CONFIG]
    prefix = request.path[: -len("/asyncapi.json")]
    doc = asyncapi_document(request.host, prefix, cfg.title, auth=cfg.auth is not None)
    return web.Response(body=orjson.dumps(doc), content_type=JSON_CT)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this app's HTTP endpoints (this request's host and prefix)."""
    prefix = request.path[: -len("/openapi.json")]
    doc = openapi_document(request.host, prefix, request.app[CONFIG])
    return web.Response(body=orjson.dumps(doc), content_type=JSON_CT)


# -- the builder -------------------------------------------------------------------------
def create_app(
    broker: Broker | None = None, *, config: ServerConfig | None = None
) -> web.Application:
    """An aiohttp application serving ``broker`` over the rxstreams wire protocol.

    Run it alone (``web.run_app(create_app())``) or mount it in your own application
    with ``root.add_subapp("/live", create_app(broker))``. Without a broker it makes
    (and closes on cleanup) a :class:`streams.MemoryBroker`.

    >>> app = create_app()
    >>> type(app[BROKER]).__name__, app[CONFIG].overflow
    ('MemoryBroker', <OverflowPolicy.DISCONNECT: 'disconnect'>)
    """
    config = config or ServerConfig()
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[json_errors])
    app[_OWNED] = broker is None
    app[BROKER] = broker if broker is not None else MemoryBroker(Retention.for_server())
    app[CONFIG] = config
    app[HUB] = Hub(config)
    app[_BUCKETS] = weakref.WeakKeyDictionary()
    hub = app[HUB]
    app[EDGE] = Edge(config.max_connections, lambda: hub.connections)
    if config.auth is not None:
        app[_VERIFIER] = TokenVerifier(config.auth)  # a JWKS file that cannot be used fails here
    app.router.add_get("/events/{pattern}", stream_events)
    app.router.add_post("/events/{subject}", ingest)
    app.router.add_get("/poll/{pattern}", poll_events)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/asyncapi.json", asyncapi)
    app.router.add_get("/openapi.json", openapi)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    app[HUB].metrics.watch_broker(app[BROKER])
    return app


async def _on_startup(app: web.Application) -> None:
    """Connect a networked broker now (its stream exists before the first client or
    outside producer needs it). A broker that is down is not fatal: it is retried on use
    and ``/healthz`` says so."""
    connect = getattr(app[BROKER], "connect", None)
    if connect is None:
        return
    try:
        async with asyncio.timeout(app[CONFIG].broker_health_timeout * 2):
            await connect()
    except Exception as exc:
        log.warning("broker not reachable at startup (retried on use): %r", exc)


async def _on_shutdown(app: web.Application) -> None:
    await app[HUB].shutdown()


async def _on_cleanup(app: web.Application) -> None:
    if app[_OWNED]:
        await app[BROKER].close()


def expose(
    app: web.Application,
    subject: str | Callable[[Any], str] | None,
    observable: Observable[Any],
) -> None:
    """Publish everything ``observable`` emits into the app's broker while the app runs.

    ``subject`` is a fixed subject, a function of the item, or ``None`` to use each
    event's own subject. Subscribed on startup, disposed on cleanup.

    >>> from streams import synthetic
    >>> app = create_app()
    >>> expose(app, None, synthetic("chat", rate=5))
    """
    if isinstance(subject, str):
        validate_subject(subject)

    def subject_of(item: Any) -> str:
        if subject is None:
            if not isinstance(item, Event) or item.subject is None:
                raise ValueError("expose(subject=None) needs events that carry a subject")
            return item.subject
        return subject if isinstance(subject, str) else subject(item)

    async def run(app: web.Application) -> Any:
        broker = app[BROKER]
        hub = app[HUB]
        counter = hub.metrics.events_in.labels("expose")
        if isinstance(broker, MemoryBroker):

            def on_next(item: Any) -> None:
                broker.publish(subject_of(item), item)
                counter.inc()

            disposable = observable.subscribe(on_next)
            yield
            disposable.dispose()
            return
        source = to_async_iterator(observable, 10_000, None, "drop_oldest")

        async def pump() -> None:
            async for item in source:
                await broker.apublish(subject_of(item), item)
                counter.inc()

        task = asyncio.get_running_loop().create_task(pump())
        yield
        await source.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(run)

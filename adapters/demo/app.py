"""The demo application: the rxstreams server plus a chat page and its pipeline.

``create_demo_app`` extends :func:`adapters.server.create_app` the aiohttp way: two routes
for the page (``/`` and ``/static/``), ``POST /demo/token`` issuing per-nickname tokens
(:mod:`adapters.demo.tokens`) that the server's own auth checks, a middleware that turns
WebSocket connections into ``presence.conn`` events, and a cleanup context that runs
:mod:`adapters.demo.pipeline` (and optionally :mod:`adapters.demo.bots`) against the app's
broker for as long as the app runs. The browser speaks the documented wire protocol
(``/ws`` for chat, ``/events/{pattern}`` SSE for the firehose).

>>> app = create_demo_app()
>>> sorted({r.resource.canonical for r in app.router.routes()})[:3]
['/', '/asyncapi.json', '/demo/token']
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import reactivex
from aiohttp import web
from reactivex.scheduler.eventloop import AsyncIOScheduler

from adapters.server import BROKER, CONFIG, ServerConfig, create_app
from adapters.server.auth import token_from, verify_token
from adapters.server.errors import ProtocolError
from streams import Broker, Event, MemoryBroker, Retention

from .bots import BOT_ROOMS, run_bots
from .cluster import GROUP, KEY, PARTITIONS, PATTERN, SOURCE, closed_subjects, keyed_pipeline
from .pipeline import NAME, Rules, build_pipeline
from .tokens import DemoTokens

__all__ = [
    "CLUSTER",
    "STATIC",
    "TOKENS",
    "BrokerSend",
    "Cluster",
    "create_demo_app",
    "is_networked",
    "run",
]

TOKENS = web.AppKey("rxstreams_demo_tokens", DemoTokens)


@dataclasses.dataclass
class Cluster:
    """This process's part in the demo's keyed worker group (networked broker only)."""

    partitions: int
    member: Any = None  # the running stateful_worker.Member, once started


CLUSTER = web.AppKey("rxstreams_demo_cluster", Cluster)
INBOUND = ("chat.*.in", "chat.*.in.*", "presence.conn")
# A bulk upload to a local demo (``rxstreams publish --file``) should not crawl: the chat's
# own flood control is per user in the pipeline, so the connection limit can be generous.
PUBLISH_RATE = 20_000.0

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)


class BrokerSend:
    """The pipeline's ``send`` for a broker: in order, never blocking the pipeline.

    The embedded broker takes a batch in one synchronous ``publish_many``; a networked
    broker gets the events through a bounded queue drained by one task (``apublish``).
    """

    def __init__(self, broker: Broker, max_queue: int = 10_000) -> None:
        self.broker = broker
        self.queue: asyncio.Queue[tuple[str, list[Event]]] = asyncio.Queue(max_queue)
        self.task: asyncio.Task[None] | None = None

    def __call__(self, subject: str, type: str, items: list[Any]) -> None:
        events = [Event.create(d, type=type, source=SOURCE) for d in items]
        if isinstance(self.broker, MemoryBroker):
            self.broker.publish_many(subject, events)
            return
        try:
            self.queue.put_nowait((subject, events))
        except asyncio.QueueFull:
            log.warning("demo: output queue full, dropped %d events for %s", len(events), subject)
            return
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            subject, events = await self.queue.get()
            for event in events:
                try:
                    await self.broker.apublish(subject, event)
                except Exception:
                    log.exception("demo: publishing to %s failed", subject)

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@web.middleware
async def connection_events(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Publish ``demo.conn.open`` / ``demo.conn.closed`` around each ``/ws?cid=&user=``.

    With tokens the user is the token's ``sub`` (``?user=`` is ignored); a connection
    without a valid token is left to the server, which refuses it.
    """
    if not request.path.endswith("/ws"):
        return await handler(request)
    cid, user = request.query.get("cid", ""), request.query.get("user", "")
    auth = request.app[CONFIG].auth
    if auth is not None:
        token = token_from(request.headers.get("Authorization"), request.query.get("token"))
        try:
            user = verify_token(token, auth).sub or ""
        except ProtocolError:
            return await handler(request)
    if not (NAME.fullmatch(cid) and NAME.fullmatch(user)):
        return await handler(request)
    broker = request.app[BROKER]
    data = {"cid": cid, "user": user}
    await broker.apublish("presence.conn", Event.create(data, type="demo.conn.open", source=SOURCE))
    try:
        return await handler(request)
    finally:
        closed = Event.create(data, type="demo.conn.closed", source=SOURCE)
        await asyncio.shield(broker.apublish("presence.conn", closed))
        cluster = request.app.get(CLUSTER)
        if cluster is not None:  # the keyed group: every partition drops the rooms it holds
            await asyncio.shield(_closed_everywhere(broker, data, cluster.partitions))


async def _closed_everywhere(broker: Broker, data: dict[str, str], partitions: int) -> None:
    for subject in closed_subjects(partitions):
        closed = Event.create(data, type="demo.conn.closed", source=SOURCE)
        await broker.apublish(subject, closed)


def is_networked(broker: Broker) -> bool:
    """A broker shared by several processes (NATS, Redis): the pipeline runs as a group."""
    return not isinstance(broker, MemoryBroker) and hasattr(broker, "consume")


def create_demo_app(
    broker: Broker | None = None,
    *,
    rules: Rules | None = None,
    config: ServerConfig | None = None,
    tokens: DemoTokens | bool = True,
    bots: int = 0,
    bot_pace: float = 4.0,
    partitions: int = PARTITIONS,
) -> web.Application:
    """The chat demo as an aiohttp application (what ``rxstreams demo`` serves).

    Without a broker it uses an embedded :class:`streams.MemoryBroker` keeping the last
    200 events per subject (so each room's recent history). ``tokens`` (default: on, with a
    secret made now) turns on the server's auth with per-nickname tokens from
    ``POST /demo/token``; ``tokens=False`` serves everything to everyone. ``bots`` synthetic
    users chat in #lobby and #random, one message every ``bot_pace`` seconds or so.
    Without ``config`` the server runs with ``publish_rate=20000`` events/s per connection.

    On a networked broker (NATS, Redis) the pipeline runs once per cluster: this process
    is one member of the keyed worker group ``demo`` with ``partitions`` partitions by room
    (:mod:`adapters.demo.cluster`); the embedded broker runs it here, as always.

    >>> app = create_demo_app(rules=Rules(max_length=100))
    >>> type(app[BROKER]).__name__, app[CONFIG].auth is not None
    ('MemoryBroker', True)
    """
    if broker is None:
        broker = MemoryBroker(
            Retention(max_events=100_000, max_bytes=256 * 2**20, max_per_subject=200)
        )
    if config is None:
        config = ServerConfig(publish_rate=PUBLISH_RATE, publish_burst=PUBLISH_RATE)
    issuer = tokens if isinstance(tokens, DemoTokens) else DemoTokens() if tokens else None
    if issuer is not None:
        config = dataclasses.replace(config, auth=issuer.config)
    app = create_app(broker, config=config)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.router.add_post("/demo/token", issue_token)
    if issuer is not None:
        app[TOKENS] = issuer
    app.middlewares.append(connection_events)
    if is_networked(broker):
        app[CLUSTER] = Cluster(partitions)

    @contextlib.asynccontextmanager
    async def chat(app: web.Application) -> AsyncIterator[None]:
        """The chat pipeline: this process's share of the cluster's, or all of it."""
        if CLUSTER in app:
            async with _member(app, rules, app[CLUSTER]):
                yield
            return
        send = BrokerSend(app[BROKER])
        inbound = reactivex.merge(*(broker.subscribe(p) for p in INBOUND))
        loop = asyncio.get_running_loop()
        running = build_pipeline(inbound, send, rules, scheduler=AsyncIOScheduler(loop))
        yield
        running.dispose()
        await send.aclose()

    async def pipeline(app: web.Application) -> AsyncIterator[None]:
        async with chat(app):
            loop = asyncio.get_running_loop()
            players = loop.create_task(run_bots(broker, bots, pace=bot_pace)) if bots else None
            yield
            if players is not None:
                players.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await players

    app.cleanup_ctx.append(pipeline)
    return app


@contextlib.asynccontextmanager
async def _member(
    app: web.Application, rules: Rules | None, cluster: Cluster
) -> AsyncIterator[None]:
    """Run this process's member of the demo's keyed worker group while the block runs."""
    from adapters.brokers.stateful_worker import run_keyed_worker

    stop = asyncio.Event()
    group = run_keyed_worker(
        app[BROKER],
        keyed_pipeline(rules),
        GROUP,
        PATTERN,
        KEY,
        cluster.partitions,
        checkpoint_seconds=0.2,
        stop=stop,
        on_member=lambda member: setattr(cluster, "member", member),
    )
    task = asyncio.get_running_loop().create_task(group, name="rx-demo-member")

    def ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not stop.is_set():
            log.error("demo: the chat pipeline stopped", exc_info=task.exception())

    task.add_done_callback(ended)
    try:
        yield
    finally:
        stop.set()  # final checkpoints, partitions released for the other members
        try:
            await asyncio.wait_for(asyncio.shield(task), 15)
        except Exception:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def index(request: web.Request) -> web.FileResponse:
    """The chat page."""
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def issue_token(request: web.Request) -> web.Response:
    """``POST /demo/token`` ``{"nick": "ada"}``: a token for that nickname and what it
    allows (``subscribe``/``publish`` patterns, ``expires``); 400 for a bad nickname, 404
    when the demo runs without tokens."""
    issuer = request.app.get(TOKENS)
    if issuer is None:
        return _json_error(404, "not_found", "this demo runs without tokens")
    try:
        body = await request.json()
        nick = body.get("nick") if isinstance(body, dict) else None
        return web.json_response(issuer.issue(nick if isinstance(nick, str) else ""))
    except ValueError as exc:  # malformed JSON or a bad nickname
        return _json_error(400, "bad_request", str(exc))


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def run(
    host: str = "127.0.0.1",
    port: int = 8080,
    broker_url: str | None = None,
    *,
    bots: int = 0,
    tokens: bool = True,
) -> None:
    """Serve the demo until SIGINT/SIGTERM (``rxstreams demo`` calls this), on uvloop
    when installed (``$RXSTREAMS_LOOP`` chooses, see :mod:`adapters.server.loop`).

    ``broker_url`` picks a networked broker (``nats://...``, ``redis://...``); without it
    the embedded broker is used. The URL is announced once the socket is listening (with
    the real port when ``port`` is 0); a port in use raises ``adapters.cli.CliError``.
    Tokens are signed with ``$RXSTREAMS_DEMO_SECRET`` when set (so several demo processes
    on one broker accept each other's tokens), else with a secret made now.

    >>> run("127.0.0.1", 8080, bots=3)  # doctest: +SKIP
    """
    from adapters.cli import serve_app

    broker: Any = None
    if broker_url:
        from adapters.brokers import from_url

        broker = from_url(broker_url)
    secret = os.environ.get("RXSTREAMS_DEMO_SECRET")  # shared by demos on one broker
    issuer = (DemoTokens(secret) if secret else DemoTokens()) if tokens else False
    app = create_demo_app(broker, tokens=issuer, bots=bots)
    if broker is not None:

        async def close_broker(app: web.Application) -> None:
            await broker.close()

        app.on_cleanup.append(close_broker)

    def announce(url: str) -> None:
        lines = [f"rxstreams demo: open {url}/ in your browser"]
        if bots:
            rooms = " and ".join(f"#{r}" for r in BOT_ROOMS)
            who = "1 synthetic user chats" if bots == 1 else f"{bots} synthetic users chat"
            lines.append(f"rxstreams demo: {who} in {rooms} (--bots 0: none)")
        if CLUSTER in app:
            lines.append(
                f"rxstreams demo: the chat pipeline runs once per cluster; this process is a "
                f"member of worker group {GROUP!r} ({app[CLUSTER].partitions} partitions by "
                "room) with every demo on this stream"
            )
        if isinstance(issuer, DemoTokens):
            lines.append(
                "rxstreams demo: command-line clients (tail, publish) need a token, valid "
                f"while this demo runs:\n  export RXSTREAMS_TOKEN={issuer.operator()}"
            )
        print("\n".join(lines), flush=True)

    from adapters.server.loop import run as run_loop  # uvloop when installed, as for serve

    run_loop(serve_app(app, host, port, announce=announce, message="{url}"))

"""The demo application: the rxstreams server plus a chat page and its pipeline.

``create_demo_app`` extends :func:`adapters.server.create_app` the aiohttp way: two routes
for the page (``/`` and ``/static/``), a middleware that turns WebSocket connections into
``presence.conn`` events, and a cleanup context that runs :mod:`adapters.demo.pipeline`
against the app's broker for as long as the app runs. The browser speaks the documented
wire protocol (``/ws`` for chat, ``/events/{pattern}`` SSE for the firehose).

>>> app = create_demo_app()
>>> sorted({r.resource.canonical for r in app.router.routes()})[:3]
['/', '/asyncapi.json', '/events/{pattern}']
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import reactivex
from aiohttp import web
from reactivex.scheduler.eventloop import AsyncIOScheduler

from adapters.server import BROKER, ServerConfig, create_app
from streams import Broker, Event, MemoryBroker, Retention

from .pipeline import NAME, Rules, build_pipeline

__all__ = ["STATIC", "BrokerSend", "create_demo_app", "run"]

STATIC = Path(__file__).parent / "static"
SOURCE = "rxstreams/demo"
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
    """Publish ``demo.conn.open`` / ``demo.conn.closed`` around each ``/ws?cid=&user=``."""
    cid, user = request.query.get("cid", ""), request.query.get("user", "")
    if not request.path.endswith("/ws") or not (NAME.fullmatch(cid) and NAME.fullmatch(user)):
        return await handler(request)
    broker = request.app[BROKER]
    data = {"cid": cid, "user": user}
    await broker.apublish("presence.conn", Event.create(data, type="demo.conn.open", source=SOURCE))
    try:
        return await handler(request)
    finally:
        closed = Event.create(data, type="demo.conn.closed", source=SOURCE)
        await asyncio.shield(broker.apublish("presence.conn", closed))


def create_demo_app(
    broker: Broker | None = None,
    *,
    rules: Rules | None = None,
    config: ServerConfig | None = None,
) -> web.Application:
    """The chat demo as an aiohttp application (what ``rxstreams demo`` serves).

    Without a broker it uses an embedded :class:`streams.MemoryBroker` keeping the last
    200 events per subject (so each room's recent history).

    >>> app = create_demo_app(rules=Rules(max_length=100))
    >>> type(app[BROKER]).__name__
    'MemoryBroker'
    """
    if broker is None:
        broker = MemoryBroker(Retention(max_events=100_000, max_per_subject=200))
    app = create_app(broker, config=config)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.middlewares.append(connection_events)

    async def pipeline(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        send = BrokerSend(app[BROKER])
        inbound = reactivex.merge(broker.subscribe("chat.*.in"), broker.subscribe("presence.conn"))
        running = build_pipeline(inbound, send, rules, scheduler=AsyncIOScheduler(loop))
        yield
        running.dispose()
        await send.aclose()

    app.cleanup_ctx.append(pipeline)
    return app


async def index(request: web.Request) -> web.FileResponse:
    """The chat page."""
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def run(host: str = "127.0.0.1", port: int = 8080, broker_url: str | None = None) -> None:
    """Serve the demo until interrupted (``rxstreams demo`` calls this).

    ``broker_url`` picks a networked broker (``nats://...``, ``redis://...``); without it
    the embedded broker is used.

    >>> run("127.0.0.1", 8080)  # doctest: +SKIP
    """
    broker: Any = None
    if broker_url:
        from adapters.brokers import from_url

        broker = from_url(broker_url)
    app = create_demo_app(broker)
    if broker is not None:

        async def close_broker(app: web.Application) -> None:
            await broker.close()

        app.on_cleanup.append(close_broker)
    print(f"rxstreams demo: open http://{host}:{port}/ in your browser")
    web.run_app(app, host=host, port=port, print=None)

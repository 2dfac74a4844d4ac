"""Subscribed means live, whichever process stores the next event (issue 16, defect 1).

Once a WebSocket client has its ``subscribed`` op (or an SSE client its response headers),
every event stored afterwards reaches it: published straight into the stream by another
process (plain nats-py / redis-py), or through a second ``rxstreams serve`` on the same
stream. Each round subscribes to a pattern nobody uses yet, so the server must start a new
broker subscription (the racy case), then publishes at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import nats
import orjson
import pytest
import redis.asyncio as aioredis

from streams import Event
from tests.brokers.conftest import build, dispose, unique_stream
from tests.brokers.services import require

from .serving import GUARD, Server

pytestmark = pytest.mark.broker

ROUNDS = 1000  # the acceptance: 1,000 rounds, 0 missed, on both brokers
SSE_ROUNDS = 100  # a new HTTP connection per round
Publish = Callable[[str, Event], Awaitable[None]]


@pytest.fixture(params=["nats", "redis"])
async def stream(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """(kind, broker URL with a fresh stream); the stream is dropped afterwards."""
    kind = str(request.param)
    base = require(kind)
    name = unique_stream()
    yield kind, f"{base}?stream={name}"
    await dispose(build(kind, stream=name))


@pytest.fixture
async def outside(stream: tuple[str, str]) -> AsyncIterator[Publish]:
    """Publish into the stream with the plain client library, as another service would."""
    kind, url = stream
    server, _, query = url.partition("?stream=")
    if kind == "nats":
        nc = await nats.connect(server)
        js = nc.jetstream()

        async def to_nats(subject: str, event: Event) -> None:
            await js.publish(f"{query}.{subject}", event.encode(), stream=query)

        yield to_nats
        await nc.close()
    else:
        r = aioredis.Redis.from_url(server)

        async def to_redis(subject: str, event: Event) -> None:
            await r.xadd(f"rxstreams:{{{query}}}:log", {"s": subject, "e": event.encode()})

        yield to_redis
        await r.aclose()


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    msg = await asyncio.wait_for(ws.receive(), GUARD)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    value = orjson.loads(msg.data)
    return value if isinstance(value, list) else [value]


async def until_op(ws: aiohttp.ClientWebSocketResponse, op: str) -> dict[str, Any]:
    while True:
        for item in await next_message(ws):
            assert item.get("op") in (None, op, "ack", "unsubscribed"), item
            if item.get("op") == op:
                return item


async def until_event(ws: aiohttp.ClientWebSocketResponse, event_id: str) -> None:
    """Wait for the event (a miss fails at the guard); anything else must not be an error."""
    while True:
        for item in await next_message(ws):
            assert item.get("op") in (None, "ack", "unsubscribed"), item
            if item.get("id") == event_id and "op" not in item:
                return


def ws_url(server: Server) -> str:
    return server.url.replace("http", "ws", 1) + "/ws"


async def test_subscribed_means_live_for_an_outside_producer(
    stream: tuple[str, str], outside: Publish
) -> None:
    server = await Server.start(stream[1])
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(server)) as ws:
            for n in range(ROUNDS):
                await ws.send_json({"op": "subscribe", "id": f"s{n}", "pattern": f"r{n}.>"})
                await until_op(ws, "subscribed")
                event = Event.create(n, id=f"e{n}")
                await outside(f"r{n}.msg", event)
                await until_event(ws, event.id)
                await ws.send_json({"op": "unsubscribe", "id": f"s{n}"})
    finally:
        await server.stop()


async def test_sse_headers_mean_live_for_an_outside_producer(
    stream: tuple[str, str], outside: Publish
) -> None:
    server = await Server.start(stream[1])
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(SSE_ROUNDS):
                async with session.get(f"{server.url}/events/q{n}.>") as resp:
                    assert resp.status == 200
                    await outside(f"q{n}.msg", Event.create(n, id=f"q{n}"))
                    async for raw in resp.content:
                        if raw.startswith(b"data:"):
                            assert orjson.loads(raw[5:])["id"] == f"q{n}"
                            break
    finally:
        await server.stop()


async def test_subscribed_means_live_across_two_servers(stream: tuple[str, str]) -> None:
    first, second = await asyncio.gather(Server.start(stream[1]), Server.start(stream[1]))
    refs = itertools.count()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(first)) as reader,
            session.ws_connect(ws_url(second)) as writer,
        ):
            for n in range(ROUNDS // 5):
                await reader.send_json({"op": "subscribe", "id": f"s{n}", "pattern": f"t{n}.*"})
                await until_op(reader, "subscribed")
                event = {"id": f"x{n}", "source": "test", "type": "t", "specversion": "1.0"}
                ref = str(next(refs))
                await writer.send_json(
                    {"op": "publish", "subject": f"t{n}.msg", "event": event, "ref": ref}
                )
                await until_event(reader, f"x{n}")
                assert (await until_op(writer, "ack"))["ref"] == ref
                await reader.send_json({"op": "unsubscribe", "id": f"s{n}"})
    finally:
        await asyncio.gather(first.stop(), second.stop())

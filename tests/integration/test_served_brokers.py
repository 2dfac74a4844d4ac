"""The server on a real NATS or Redis broker: what other producers write, lost history
under a live subscription, and what ``/healthz`` says (issue 16, defects 2 and 4).

The app runs in-process on 127.0.0.1; the other producer and the admin are plain nats-py
and redis-py clients.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import nats
import orjson
import pytest
import redis.asyncio as aioredis

from adapters.brokers import NatsBroker, RedisBroker
from adapters.server import ServerConfig, create_app
from streams import Event
from tests.brokers.conftest import build, dispose
from tests.brokers.services import require
from tests.server.conftest import Server, start

from .serving import sse_fields

pytestmark = pytest.mark.broker

GUARD = 15.0  # turns a hang into a failure; never a timed assertion
Raw = Callable[[str, bytes | dict[str, Any]], Awaitable[None]]


class Outside:
    """Another service on the same stream: writes raw entries, and can delete the stream."""

    def __init__(self, kind: str, url: str, stream: str) -> None:
        self.kind = kind
        self.url = url
        self.stream = stream
        self.nc: Any = None
        self.redis: Any = None

    async def __aenter__(self) -> Outside:
        if self.kind == "nats":
            self.nc = await nats.connect(self.url)
        else:
            self.redis = aioredis.Redis.from_url(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.nc is not None:
            await self.nc.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def write(self, subject: str, payload: bytes) -> None:
        """A message on ``subject`` carrying ``payload`` as is."""
        if self.nc is not None:
            await self.nc.jetstream().publish(f"{self.stream}.{subject}", payload)
        else:
            await self.redis.xadd(f"rxstreams:{{{self.stream}}}:log", {"s": subject, "e": payload})

    async def write_fields(self, fields: dict[str, str]) -> None:
        """A Redis entry with exactly these fields (no ``s``: no subject at all)."""
        await self.redis.xadd(f"rxstreams:{{{self.stream}}}:log", fields)

    async def lose_history(self) -> None:
        """What a broker restart without storage does: the stream is gone."""
        if self.nc is not None:
            await self.nc.jetstream().delete_stream(self.stream)
        else:
            await self.redis.delete(
                f"rxstreams:{{{self.stream}}}:log", f"rxstreams:{{{self.stream}}}:meta"
            )


@pytest.fixture(params=["nats", "redis"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Server, Outside]]:
    kind = str(request.param)
    url = require(kind)
    broker = build(kind)
    server = await start(create_app(broker, config=ServerConfig(heartbeat=0.5)), broker)
    try:
        async with Outside(kind, url, broker.stream) as outside:
            yield server, outside
    finally:
        await server.runner.cleanup()
        await dispose(broker)


async def sse_lines(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, JSON data) per SSE event: ``message`` for events, else the op name."""
    async for fields in sse_fields(resp):
        yield fields.get("event", "message"), fields["data"]


async def ws_items(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[dict[str, Any]]:
    while True:
        msg = await asyncio.wait_for(ws.receive(), GUARD)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"WebSocket ended: {msg}"
        value = orjson.loads(msg.data)
        for item in value if isinstance(value, list) else [value]:
            yield item


JUNK = [b'{"amount": 6}', b"\xff\xfe not text", b"[" * 300 + b"]" * 300, b"plain words"]


async def write_junk(outside: Outside) -> None:
    for payload in JUNK:
        await outside.write("ext.plain", payload)
    if outside.kind == "redis":
        await outside.write_fields({"e": '{"no": "subject"}'})


async def test_foreign_entries_never_end_a_live_stream(served: tuple[Server, Outside]) -> None:
    server, outside = served
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/events/>") as sse,
        session.ws_connect(server.ws_url()) as ws,
    ):
        await ws.send_json({"op": "subscribe", "id": "all", "pattern": ">"})
        items = ws_items(ws)
        assert (await anext(items))["op"] == "subscribed"
        await write_junk(outside)
        await outside.write("ext.after", Event.create("after", id="after").encode())
        seen_ws = []
        async for item in items:
            assert "op" not in item, item
            seen_ws.append(item)
            if item["id"] == "after":
                break
        seen_sse = []
        async for name, data in sse_lines(sse):
            assert name == "message", data
            seen_sse.append(data)
            if data["id"] == "after":
                break
        async with session.get(f"{server.url}/metrics") as resp:
            metrics = await resp.text()
    for seen in (seen_ws, seen_sse):
        external = [e for e in seen if e["type"] == "io.rxstreams.external"]
        assert [e["data"] for e in external] == [{"amount": 6}, "plain words"]
        assert [e["datacontenttype"] for e in external] == ["application/json", "text/plain"]
        assert all(e["subject"] == "ext.plain" for e in external)
        assert seen[-1]["data"] == "after"
    skipped = [ln for ln in metrics.splitlines() if ln.startswith("rxstreams_broker_entries_")]
    count = float(skipped[0].split()[-1]) if skipped else 0.0
    expected_unreadable = 3 if outside.kind == "redis" else 2
    assert count >= expected_unreadable  # counted once per subscription that met them


async def test_resume_and_poll_pass_over_foreign_entries(served: tuple[Server, Outside]) -> None:
    server, outside = served
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/events/ext.before", json="before") as resp:
            [before] = (await resp.json())["positions"]
        await write_junk(outside)
        await outside.write("ext.after", Event.create("after", id="after").encode())
        async with session.get(f"{server.url}/poll/ext.>", params={"after": before}) as resp:
            assert resp.status == 200
            polled = await resp.json()
        assert [e["type"] for e in polled][:2] == ["io.rxstreams.external"] * 2
        assert polled[-1]["id"] == "after"
        # a poll from after the last foreign entry has nothing older to trip over
        last = polled[-1]["sequence"]
        params = {"after": last, "timeout": "0"}
        async with session.get(f"{server.url}/poll/ext.>", params=params) as resp:
            assert resp.status == 200 and await resp.json() == []
        headers = {"Last-Event-ID": before}
        async with session.get(f"{server.url}/events/ext.>", headers=headers) as sse:
            async for name, data in sse_lines(sse):
                assert name == "message", data
                if data["id"] == "after":
                    break


async def test_a_live_subscription_that_loses_history_says_gap_and_goes_on(
    served: tuple[Server, Outside],
) -> None:
    server, outside = served
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(server.ws_url()) as ws,
    ):
        await ws.send_json({"op": "subscribe", "id": "room", "pattern": "room.>"})
        items = ws_items(ws)
        assert (await anext(items))["op"] == "subscribed"
        await session.post(f"{server.url}/events/room.a", json="first")
        assert (await anext(items))["data"] == "first"
        await outside.lose_history()

        async def publish_until_gap() -> None:
            # The stream is recreated by the next publish; the subscription notices the new
            # epoch when it next reads (NATS: after missed heartbeats), so keep publishing.
            n = 0
            while True:
                await session.post(f"{server.url}/events/room.a", json=f"later {n}")
                n += 1
                await asyncio.sleep(0.2)

        publisher = asyncio.create_task(publish_until_gap())
        try:
            item = await anext(items)
            assert item["op"] == "gap" and item["id"] == "room", item
            assert "epoch changed" in item["reason"]
            item = await anext(items)
            assert item["data"].startswith("later"), item  # and it goes on
        finally:
            publisher.cancel()


async def test_healthz_reports_the_broker_state(served: tuple[Server, Outside]) -> None:
    server, outside = served
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    state = body["broker_state"]
    assert body["status"] == "ok" and state["connected"] is True
    assert state["stream"] == outside.stream and state["epoch"] == body["epoch"] != ""
    assert isinstance(state["atomic_batch"], bool)
    # the stream exists before anything was published: an outside producer can write now
    await outside.write("ext.first", Event.create("first").encode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", ["nats", "redis"])
async def test_healthz_is_503_while_the_broker_is_down(kind: str) -> None:
    port = free_port()
    if kind == "nats":
        broker: Any = NatsBroker(f"nats://127.0.0.1:{port}", timeout=0.5)
    else:
        broker = RedisBroker(f"redis://127.0.0.1:{port}/0")
    server = await start(create_app(broker, config=ServerConfig(broker_health_timeout=1)), broker)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/healthz") as resp:
                body = await resp.json()
                assert resp.status == 503, body
            assert body["status"] == "broker_unavailable"
            assert body["broker_state"]["connected"] is False
            async with session.get(f"{server.url}/events/x.>") as resp:
                assert resp.status == 503
                assert (await resp.json())["error"]["code"] == "unavailable"
    finally:
        await server.runner.cleanup()
        await broker.close()

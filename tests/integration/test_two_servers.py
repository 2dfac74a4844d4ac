"""Two ``rxstreams serve`` processes on different ports share one broker (issue 6).

A WebSocket client on the first server receives, in order, what is published through the
second; an SSE client resumes on the second from a position it saw on the first and gets
exactly the later events. Each test uses its own stream, named in the ``--broker`` URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.brokers.conftest import build, dispose, unique_stream
from tests.brokers.services import require

from .serving import GUARD, Server, sse_fields

pytestmark = pytest.mark.broker


@pytest.fixture(params=["nats", "redis"])
async def servers(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Server, Server]]:
    kind = str(request.param)
    base = require(kind)
    stream = unique_stream()
    started = await asyncio.gather(
        *(Server.start(f"{base}?stream={stream}") for _ in range(2)), return_exceptions=True
    )
    try:
        for item in started:
            if isinstance(item, BaseException):
                raise item
        first, second = started
        assert isinstance(first, Server) and isinstance(second, Server)
        assert first.url != second.url
        yield first, second
    finally:
        for item in started:
            if isinstance(item, Server):
                await item.stop()
        await dispose(build(kind, stream=stream))  # drop the test's stream


async def publish(
    session: aiohttp.ClientSession, server: Server, subject: str, data: Any
) -> list[str]:
    """POST events through ``server``; their positions."""
    async with session.post(f"{server.url}/events/{subject}", json=data) as resp:
        assert resp.status == 202, await resp.text()
        positions: list[str] = (await resp.json())["positions"]
        return positions


async def ws_events(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    """The next ``n`` events from a WebSocket (control messages must not be errors)."""
    got: list[dict[str, Any]] = []
    while len(got) < n:
        msg = await asyncio.wait_for(ws.receive(), GUARD)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        value = orjson.loads(msg.data)
        for item in value if isinstance(value, list) else [value]:
            assert item.get("op") in (None, "subscribed"), item
            if "op" not in item:
                got.append(item)
    return got


async def sse_events(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The next ``n`` (id, event) pairs of an SSE response; a gap notice fails."""
    got: list[tuple[str, dict[str, Any]]] = []
    async for fields in sse_fields(resp):
        assert "event" not in fields, fields  # no gap notice expected
        got.append((fields["id"], fields["data"]))
        if len(got) == n:
            break
    return got


async def test_websocket_on_one_server_receives_what_the_other_published(
    servers: tuple[Server, Server],
) -> None:
    first, second = servers
    async with aiohttp.ClientSession() as session:
        [start] = await publish(session, second, "chat.start", "start")
        async with session.ws_connect(first.url.replace("http", "ws", 1) + "/ws") as ws:
            await ws.send_json({"op": "subscribe", "id": "s", "pattern": "chat.>", "since": start})
            positions = await publish(session, second, "chat.room", list(range(20)))
            positions += await publish(session, second, "chat.other", [20, 21])
            events = await ws_events(ws, 22)
    assert [e["data"] for e in events] == list(range(22))
    assert [e["subject"] for e in events] == ["chat.room"] * 20 + ["chat.other"] * 2
    assert [e["sequence"] for e in events] == positions


async def test_live_websocket_on_one_server_follows_the_other(
    servers: tuple[Server, Server],
) -> None:
    first, second = servers
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(first.url.replace("http", "ws", 1) + "/ws") as ws,
    ):
        await ws.send_json({"op": "subscribe", "id": "s", "pattern": "live.>"})
        # The live subscription starts at some point after "subscribed": probe until it has.
        probes = 0

        async def probe() -> None:
            nonlocal probes
            while True:
                probes += 1  # counted when sent: a probe may arrive before its POST returns
                await publish(session, second, "live.probe", probes - 1)
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(probe())
        try:
            received = await ws_events(ws, 1)
        finally:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        await publish(session, second, "live.msg", list(range(10)))
        # Probes still in flight arrive first, in order; then the ten events.
        tail: list[dict[str, Any]] = []
        while len([e for e in tail if e["subject"] == "live.msg"]) < 10:
            tail += await ws_events(ws, 1)
    everything = received + tail
    probe_data = [e["data"] for e in everything if e["subject"] == "live.probe"]
    assert probe_data == sorted(set(probe_data)) and probe_data[-1] < probes
    assert [e["subject"] for e in everything][-10:] == ["live.msg"] * 10
    assert [e["data"] for e in everything][-10:] == list(range(10))


async def test_sse_resumes_on_the_other_server_from_a_position_seen_on_the_first(
    servers: tuple[Server, Server],
) -> None:
    first, second = servers
    async with aiohttp.ClientSession() as session:
        [start] = await publish(session, first, "feed.start", "start")
        positions = await publish(session, first, "feed.tick", list(range(20)))
        headers = {"Last-Event-ID": start}
        async with session.get(f"{first.url}/events/feed.>", headers=headers) as resp:
            assert resp.status == 200
            seen = await sse_events(resp, 8)
        assert [(i, e["data"]) for i, e in seen] == list(zip(positions[:8], range(8), strict=True))
        resume_from = seen[-1][0]
        headers = {"Last-Event-ID": resume_from}
        async with session.get(f"{second.url}/events/feed.>", headers=headers) as resp:
            assert resp.status == 200
            replayed = await sse_events(resp, 12)
            [end] = await publish(session, first, "feed.end", "end")
            [(end_id, last)] = await sse_events(resp, 1)
    assert [(i, e["data"]) for i, e in replayed] == list(
        zip(positions[8:], range(8, 20), strict=True)
    )
    assert (end_id, last["data"]) == (end, "end")  # nothing extra between replay and live

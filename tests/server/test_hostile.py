"""Hostile input over real sockets (issue 11): every case gets its documented answer, the
connection that sent it is kept where PROTOCOL.md says so, and no endpoint answers 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.server import ServerConfig, create_app
from adapters.server.serving import EdgeRunner
from streams import Event, MemoryBroker

from .conftest import Server
from .test_ws import next_op


async def start_edge(broker: MemoryBroker | None = None, **config: Any) -> Server:
    """A real server the way ``rxstreams serve`` runs it (:class:`EdgeRunner`)."""
    broker = broker if broker is not None else MemoryBroker()
    runner = EdgeRunner(create_app(broker, config=ServerConfig(**config)), shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return Server(runner, f"http://{host}:{port}", broker)


@pytest.fixture
async def edge_server() -> Any:
    servers: list[Server] = []

    async def make(**config: Any) -> Server:
        servers.append(await start_edge(**config))
        return servers[-1]

    yield make
    for s in servers:
        await s.runner.cleanup()


async def raw_exchange(server: Server, data: bytes, timeout: float = 5) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body = await resp.json()
    return body["error"]  # type: ignore[no-any-return]


# -- 1. positions with non-ASCII digits ------------------------------------------------------
@pytest.mark.parametrize("digits", ["\u00b2", "\u0661\u0662", "\U0001d7d9", "1\u00b2"])
async def test_non_ascii_digit_positions_are_bad_position_not_500(
    server: Server, session: aiohttp.ClientSession, digits: str
) -> None:
    for path, headers in (
        (f"/events/%3E?last_event_id=e-{digits}", {}),
        ("/events/%3E", {"Last-Event-ID": f"e-{digits}"}),
        (f"/poll/%3E?after=e-{digits}&timeout=0", {}),
    ):
        async with session.get(server.url + path, headers=headers) as r:
            assert r.status == 400, path
            assert (await error_of(r))["code"] == "bad_position"
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "subscribe", "id": "s", "pattern": ">", "since": f"e-{digits}"})
        err = await next_op(ws, "error")
        assert (err["code"], err["ref"]) == ("bad_position", "s")
        await ws.send_json({"op": "subscribe", "id": "t", "pattern": ">"})
        assert (await next_op(ws, "subscribed"))["id"] == "t"  # the connection is kept


# -- 2. JSON nested too deep to be written back --------------------------------------------
DEEP = json.dumps({"deep": nested(300)}).encode()  # orjson itself cannot write it


async def test_deep_json_is_refused_at_http_ingest(
    server: Server, session: aiohttp.ClientSession
) -> None:
    for body, ctype in (
        (DEEP, "application/json"),
        (b"[1, " + DEEP + b"]", "application/json"),
        (b"1\n" + DEEP + b"\n", "application/x-ndjson"),
        (
            json.dumps(
                {"specversion": "1.0", "id": "x", "source": "s", "type": "t", "data": nested(300)}
            ).encode(),
            "application/cloudevents+json",
        ),
    ):
        async with session.post(
            server.url + "/events/deep.x", data=body, headers={"Content-Type": ctype}
        ) as r:
            assert r.status == 400, ctype
            err = await error_of(r)
            assert err["code"] == "bad_event" and "nested deeper than" in err["message"]
    assert list(server.broker.history("deep.>")) == []  # nothing half-accepted
    # the deepest event that can be written back is accepted and delivered
    ok = orjson.dumps({"ok": nested(252)})  # data 253 levels deep, the event 254
    async with session.post(
        server.url + "/events/deep.x", data=ok, headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 202
    async with session.get(server.url + f"/poll/deep.>?after={server.broker.epoch}-0") as r:
        assert r.status == 200 and (await r.json())[0]["data"] == {"ok": nested(252)}


async def test_deep_json_is_refused_at_websocket_publish(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_str(
            json.dumps({"op": "publish", "ref": "d", "subject": "deep.x", "data": nested(300)})
        )
        err = await next_op(ws, "error")
        assert (err["code"], err["ref"]) == ("bad_event", "d")
        assert "nested deeper than" in err["message"]
        event = {"specversion": "1.0", "id": "i", "source": "s", "type": "t", "x": nested(300)}
        await ws.send_str(
            json.dumps({"op": "publish", "ref": "e", "subject": "deep.x", "event": event})
        )
        err = await next_op(ws, "error")
        assert (err["code"], err["ref"]) == ("bad_event", "e")
        await ws.send_json({"op": "publish", "ref": "ok", "subject": "deep.x", "data": 1})
        assert (await next_op(ws, "ack"))["ref"] == "ok"
    assert [e.data for e in server.broker.history("deep.>")] == [1]


async def test_a_stored_event_that_cannot_be_written_never_makes_poll_answer_500(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    broker = MemoryBroker()
    server = await make_server(broker)
    broker.publish("deep.x", Event.create(nested(300)))  # in-process: no ingest check
    broker.publish("deep.x", {"after": 1})
    for _ in range(2):
        async with session.get(server.url + f"/poll/deep.>?after={broker.epoch}-0") as r:
            assert r.status == 200
            assert [e["data"] for e in await r.json()] == [{"after": 1}]


# -- 7. every HTTP error is the JSON error object ------------------------------------------------
async def test_404_405_and_parser_errors_answer_json(
    edge_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await edge_server()
    async with session.get(server.url + "/nowhere") as r:
        assert r.status == 404 and (await error_of(r))["code"] == "not_found"
    async with session.delete(server.url + "/events/a") as r:
        assert r.status == 405 and (await error_of(r))["code"] == "method_not_allowed"
        assert "GET" in r.headers["Allow"]
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /events/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ):
        answer = await raw_exchange(server, raw)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), answer[:80]
        assert b"Content-Type: application/json" in head, head
        assert orjson.loads(body)["error"]["code"] in ("bad_request", "too_large")


async def test_an_unexpected_handler_error_answers_json_500(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    class Broken(MemoryBroker):
        async def last_position(self) -> Any:
            raise AssertionError("a bug")

        async def apublish_many(self, subject: str, events: Any) -> Any:
            raise KeyError("a bug")

    server = await make_server(Broken())

    async def healthz_bug(*_: Any) -> Any:
        raise ZeroDivisionError

    server.broker.health = healthz_bug  # type: ignore[attr-defined]
    async with session.get(server.url + "/healthz") as r:
        assert r.status in (200, 503)  # health() failing is "down", not a crash
    server.broker.subscribe = None  # type: ignore[assignment,method-assign]
    async with session.get(server.url + f"/poll/a?after={server.broker.epoch}-0") as r:
        assert r.status == 500
        err = await error_of(r)
        assert err["code"] == "internal" and "NoneType" not in err["message"]


# -- 5. slow headers and bodies; connections that are not yet requests ----------------------
async def test_slow_headers_are_cut_and_count_against_the_connection_limit(
    edge_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await edge_server(header_timeout=1.0, max_connections=3)
    host, port = server.url.removeprefix("http://").split(":")
    loris = []
    for _ in range(3):  # partial headers, a byte now and then
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
        loris.append((reader, writer))
    await asyncio.sleep(0.2)
    # every place is taken by a connection that is not yet a request
    async with session.get(server.url + "/poll/a?timeout=0") as r:
        assert r.status == 503 and (await error_of(r))["code"] == "overloaded"
        assert r.headers["Retry-After"] == "1"
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _, writer in loris:
        writer.write(b"b")
    for reader, writer in loris:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no answer
        writer.close()
    assert loop.time() - started < 2.5
    await asyncio.sleep(0.1)
    async with session.get(server.url + "/poll/a?timeout=0") as r:
        assert r.status == 200  # their places are free again


async def test_connections_beyond_the_limit_are_refused_at_once(edge_server: Any) -> None:
    server = await edge_server(header_timeout=5.0, max_connections=2)
    host, port = server.url.removeprefix("http://").split(":")
    held = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
    await asyncio.sleep(0.1)
    answer = await raw_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head
    assert orjson.loads(body)["error"]["code"] == "overloaded"
    for _, writer in held:
        writer.close()


async def test_a_slow_body_answers_408(edge_server: Any) -> None:
    server = await edge_server(body_timeout=0.5)
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /events/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n[1,"
    )
    answer = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert orjson.loads(body)["error"]["code"] == "request_timeout"
    assert list(server.broker.history(">")) == []


async def test_half_open_connections_count_for_a_mounted_app_too(
    session: aiohttp.ClientSession,
) -> None:
    root = web.Application()
    root.add_subapp("/live", create_app(config=ServerConfig(max_connections=2)))
    runner = EdgeRunner(root, config=ServerConfig(header_timeout=2), shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        held = [await asyncio.open_connection(host, port) for _ in range(2)]
        for _, writer in held:
            writer.write(b"GET / HTTP/1.1\r\n")
        await asyncio.sleep(0.1)
        async with session.get(f"http://{host}:{port}/live/poll/a?timeout=0") as r:
            assert r.status == 503 and (await error_of(r))["code"] == "overloaded"
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.1)
        async with session.get(f"http://{host}:{port}/live/poll/a?timeout=0") as r:
            assert r.status == 200
    finally:
        await runner.cleanup()


async def test_the_header_timeout_never_cuts_a_stream_or_a_websocket(
    edge_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await edge_server(header_timeout=0.5, heartbeat=10)
    async with (
        session.get(server.url + "/events/a", headers={"Accept": "application/x-ndjson"}) as r,
        session.ws_connect(server.ws_url()) as ws,
    ):
        await ws.send_json({"op": "subscribe", "id": "s", "pattern": "a"})
        await next_op(ws, "subscribed")
        await asyncio.sleep(1.5)  # three header timeouts, no byte either way
        server.broker.publish("a", {"late": True})
        line = await asyncio.wait_for(r.content.readline(), 5)
        assert orjson.loads(line)["data"] == {"late": True}
        got = orjson.loads(await asyncio.wait_for(ws.receive_str(), 5))
        assert (got[0] if isinstance(got, list) else got)["data"] == {"late": True}

"""HTTP endpoints over real sockets: SSE, NDJSON, long-poll, ingest, metrics, health, AsyncAPI."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from aiohttp import web

from adapters.server import HUB, create_app, expose
from streams import MemoryBroker, Retention, from_iterable

from .conftest import Server, start

SSE_HEADERS = {"Accept": "text/event-stream"}


async def read_sse(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    """Parse SSE blocks until ``count`` events (data blocks, gap included) arrived."""
    out: list[dict[str, Any]] = []
    buf = b""
    while len(out) < count:
        chunk = await resp.content.readany()
        assert chunk, "stream ended early"
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            fields: dict[str, Any] = {}
            for line in block.decode().split("\n"):
                if line.startswith(":") or not line:
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                out.append(fields)
    return out


async def test_sse_stream_has_headers_positions_and_resumes(
    server: Server, session: aiohttp.ClientSession
) -> None:
    b = server.broker
    p1 = b.publish("chat.a.msg", {"n": 1})
    b.publish("chat.a.msg", {"n": 2})
    url = server.url + "/events/chat.>"
    async with session.get(url, headers={**SSE_HEADERS, "Last-Event-ID": str(p1)}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["X-Accel-Buffering"] == "no"
        first = await read_sse(r, 1)
        assert first[0]["id"] == f"{b.epoch}-2" and first[0]["data"]["data"] == {"n": 2}
        b.publish("chat.b.msg", {"n": 3})
        b.publish("other", {"n": 4})
        live = await read_sse(r, 1)
        assert live[0]["data"]["data"] == {"n": 3}
    async with session.get(url + f"?last_event_id={b.epoch}-0") as r:
        got = await read_sse(r, 3)
        assert [e["data"]["data"]["n"] for e in got] == [1, 2, 3]


async def test_ndjson_stream_and_gap_line(make_server: Any, session: aiohttp.ClientSession) -> None:
    broker = MemoryBroker(Retention(max_events=2, max_per_subject=None))
    server = await make_server(broker)
    for i in range(5):
        broker.publish("s.x", {"i": i})
    retained = [e.data["i"] for e in broker.history("s.>")]
    assert 0 < len(retained) < 5
    headers = {"Accept": "application/x-ndjson", "Last-Event-ID": f"{broker.epoch}-1"}
    async with session.get(server.url + "/events/s.>", headers=headers) as r:
        assert r.headers["Content-Type"] == "application/x-ndjson"
        lines: list[dict[str, Any]] = []
        while len(lines) < 1 + len(retained):
            line = await r.content.readline()
            if line.strip():
                lines.append(orjson.loads(line))
    assert lines[0]["op"] == "gap" and lines[0]["earliest"] == str(broker.earliest())
    assert [x["data"]["i"] for x in lines[1:]] == retained


async def test_sse_gap_event_then_continues_from_earliest(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    broker = MemoryBroker(Retention(max_events=2, max_per_subject=None))
    server = await make_server(broker)
    for i in range(5):
        broker.publish("s.x", i)
    async with session.get(server.url + f"/events/s.x?last_event_id={broker.epoch}-0") as r:
        gap, event = await read_sse(r, 2)
    assert gap["event"] == "gap" and gap["data"]["earliest"] == str(broker.earliest())
    assert event["id"] == str(broker.earliest())


async def test_long_poll(server: Server, session: aiohttp.ClientSession) -> None:
    b = server.broker
    url = server.url + "/poll/p.>"
    async with session.get(url + "?timeout=0") as r:
        assert r.status == 200 and await r.json() == [] and "X-Last-Event-ID" not in r.headers
    waiting = asyncio.ensure_future(session.get(url + "?timeout=30"))
    while not b.subscriber_count:
        await asyncio.sleep(0.01)
    b.publish("p.q", {"v": 1})
    r = await waiting
    assert r.headers["Content-Type"] == "application/cloudevents-batch+json"
    batch = await r.json()
    assert [e["data"] for e in batch] == [{"v": 1}]
    b.publish("p.q", {"v": 2})
    b.publish("p.q", {"v": 3})
    after = r.headers["X-Last-Event-ID"]
    async with session.get(url + f"?after={after}&limit=1") as r2:
        assert [e["data"] for e in await r2.json()] == [{"v": 2}]
        after = r2.headers["X-Last-Event-ID"]
    async with session.get(url + f"?after={after}") as r3:
        assert [e["data"] for e in await r3.json()] == [{"v": 3}]


async def test_long_poll_gap_answers_410(make_server: Any, session: aiohttp.ClientSession) -> None:
    broker = MemoryBroker(Retention(max_events=2, max_per_subject=None))
    server = await make_server(broker)
    for i in range(5):
        broker.publish("a", i)
    async with session.get(server.url + f"/poll/a?after={broker.epoch}-0") as r:
        assert r.status == 410
        err = (await r.json())["error"]
    assert err["code"] == "gap" and err["earliest"] == str(broker.earliest())


async def test_ingest_publishes_whole_batches(
    server: Server, session: aiohttp.ClientSession
) -> None:
    url = server.url + "/events/in.x"
    async with session.post(url, json=[{"a": 1}, {"a": 2}]) as r:
        assert r.status == 202
        positions = (await r.json())["positions"]
    assert positions == [f"{server.broker.epoch}-1", f"{server.broker.epoch}-2"]
    body = b'{"a": 3}\n{"specversion":"1.0","id":"x","source":"s","type":"t","subject":"z"}\n'
    headers = {"Content-Type": "application/x-ndjson"}
    async with session.post(url + "?type=my.type", data=body, headers=headers) as r:
        assert r.status == 202
    events = server.broker.history("in.x")
    assert [e.type for e in events] == ["rxstreams.event"] * 2 + ["my.type", "t"]
    assert events[-1].subject == "in.x"  # the URL's subject wins


BAD_INGEST = [
    ("/events/in.x", b"[1, {", "application/json", 400, "bad_json"),
    ("/events/in.x", b'1\n2\n{"x"', "application/x-ndjson", 400, "bad_json"),
    ("/events/in.x", b'[1, {"specversion":"1.0"}]', "application/json", 400, "bad_event"),
    ("/events/in.*", b"1", "application/json", 400, "bad_subject"),
    ("/events/in..x", b"1", "application/json", 400, "bad_subject"),
    ("/events/in.x", b"1", "text/plain", 415, "unsupported_media_type"),
    ("/events/in.x", b"[" + b"1," * 40_000 + b"1]", "application/json", 413, "too_large"),
]


async def test_bad_ingest_table_while_another_client_keeps_receiving(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(max_body_bytes=50_000)
    async with session.get(server.url + "/events/in.>") as stream:
        for path, body, ctype, status, code in BAD_INGEST:
            async with session.post(
                server.url + path, data=body, headers={"Content-Type": ctype}
            ) as r:
                assert r.status == status, (path, body[:20])
                assert r.headers["Content-Type"].startswith("application/json")
                assert (await r.json())["error"]["code"] == code
            server.broker.publish("in.ok", {"after": code})
            (got,) = await read_sse(stream, 1)
            assert got["data"]["data"] == {"after": code}
    # nothing of a rejected batch was published
    assert [e.data for e in server.broker.history("in.x")] == []
    async with session.get(server.url + "/events/a..b") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_subject"
    async with session.get(server.url + "/events/a?last_event_id=zz") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_position"
    async with session.get(server.url + "/poll/a?timeout=-1") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"


async def test_publish_rate_limit_per_connection(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(publish_rate=0.001, publish_burst=3)
    url = server.url + "/events/r.x"
    statuses = []
    for _ in range(3):
        async with session.post(url, json=1) as r:
            statuses.append(r.status)
    async with session.post(url, json=[1, 2]) as r:
        statuses.append(r.status)
        err = (await r.json())["error"]
        assert err["code"] == "rate_limited"
        # two tokens at 0.001/s: ~2000 s until the batch fits, in the header and the body
        assert 1990 < err["retry_after"] <= 2000
        assert r.headers["Retry-After"] == str(math.ceil(err["retry_after"]))
    async with session.post(url, json=[1, 2, 3, 4]) as r:
        statuses.append(r.status)  # larger than the burst: it could never pass
        err = (await r.json())["error"]
        assert (err["code"], err["limit"]) == ("too_large", 3) and "Retry-After" not in r.headers
    assert statuses == [202, 202, 202, 429, 413]
    assert len(server.broker.history("r.x")) == 3


async def test_connection_limit_answers_503(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(max_connections=1)
    async with session.get(server.url + "/events/a") as first:
        assert first.status == 200
        async with session.get(server.url + "/events/a") as r:
            assert r.status == 503 and (await r.json())["error"]["code"] == "overloaded"
            assert r.headers["Retry-After"] == "1"
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(server.ws_url())
        assert info.value.status == 503
        assert info.value.headers is not None and info.value.headers["Retry-After"] == "1"


async def test_shutting_down_answers_503_with_retry_after(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(overloaded_retry_after=2.5)
    await server.app[HUB].shutdown()  # what the app's on_shutdown runs; the socket stays open
    for path in ("/events/a", "/poll/a", "/ws"):
        async with session.get(server.url + path) as r:
            assert r.status == 503, path
            assert (await r.json())["error"] == {
                "code": "overloaded",
                "message": "server is shutting down",
                "retry_after": 2.5,
            }
            assert r.headers["Retry-After"] == "3"
    async with session.get(server.url + "/healthz") as r:
        assert r.status == 503 and r.headers["Retry-After"] == "3"
        assert (await r.json())["status"] == "shutting_down"


async def test_metrics_healthz_and_asyncapi(server: Server, session: aiohttp.ClientSession) -> None:
    async with session.post(server.url + "/events/m.x", json=[1, 2]) as r:
        assert r.status == 202
    async with session.post(server.url + "/events/m.x", data=b"{") as r:
        assert r.status == 415
    async with session.get(server.url + "/metrics") as r:
        text = await r.text()
    assert 'rxstreams_events_in_total{transport="http"} 2.0' in text
    assert 'rxstreams_errors_total{code="unsupported_media_type"} 1.0' in text
    for name in (
        "rxstreams_connections",
        "rxstreams_events_out_total",
        "rxstreams_queue_depth_events",
        "rxstreams_send_latency_seconds_bucket",
    ):
        assert name in text
    async with session.get(server.url + "/healthz") as r:
        health = await r.json()
    assert health["status"] == "ok" and health["epoch"] == server.broker.epoch
    async with session.get(server.url + "/asyncapi.json") as r:
        doc = await r.json()
    schema = json.loads((Path(__file__).parent / "asyncapi-3.0.0.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["asyncapi"] == "3.0.0" and doc["channels"]["ws"]["address"] == "/ws"
    broken = {**doc, "operations": {"x": {"action": "shout"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


async def test_mounted_as_subapp_with_expose(session: aiohttp.ClientSession) -> None:
    broker = MemoryBroker()
    root = web.Application()
    sub = create_app(broker)
    expose(sub, "fixed.subject", from_iterable([{"k": 1}]))
    root.add_subapp("/live", sub)
    server = await start(root, broker)
    try:
        assert [e.data for e in broker.history("fixed.subject")] == [{"k": 1}]
        async with session.get(server.url + "/live/asyncapi.json") as r:
            doc = await r.json()
        assert doc["channels"]["ws"]["address"] == "/live/ws"
        async with session.post(server.url + "/live/events/a.b", json=1) as r:
            assert r.status == 202
    finally:
        await server.runner.cleanup()


async def until(condition: Any, what: str) -> None:
    """Wait for ``condition()`` (a state change with no event to await), giving up after
    about 5 s; the server's heartbeat in these tests is an hour away."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.parametrize(
    ("path", "accept", "gauge"),
    [
        ("/events/d.>", "text/event-stream", "sse"),
        ("/events/d.>", "application/x-ndjson", "ndjson"),
        ("/poll/d.>?timeout=60", "application/json", None),
    ],
)
async def test_a_closed_client_is_released_at_once_without_any_write(
    make_server: Any, path: str, accept: str, gauge: str | None
) -> None:
    server = await make_server(heartbeat=3600)
    hub = server.app[HUB]
    host, port = server.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode())
    await until(lambda: server.broker.subscriber_count == 1, "subscribed")
    assert hub.connections == 1
    writer.close()  # nothing is ever published: only the closed socket can end it
    await writer.wait_closed()
    await until(
        lambda: server.broker.subscriber_count == 0 and hub.connections == 0 and not hub.clients,
        "subscription and counters released",
    )
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as r:
        text = await r.text()
    if gauge is not None:
        assert f'rxstreams_connections{{transport="{gauge}"}} 0.0' in text
    server.broker.publish("d.x", 1)  # and publishing afterwards reaches no one, harmlessly


# -- overflow per route ---------------------------------------------------------------------
def stuck_stream(port: int, path: str) -> socket.socket:
    """An SSE client on a tiny receive buffer that does not read until told to."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.setblocking(False)
    return s


async def read_all(sock: socket.socket, marker: bytes) -> tuple[bytes, bool]:
    """Read until ``marker`` arrives (True) or the server ends the connection (False)."""
    loop = asyncio.get_running_loop()
    data = b""
    while marker not in data:
        try:
            chunk = await loop.sock_recv(sock, 65536)
        except ConnectionError:
            return data, False
        if not chunk:
            return data, False
        data += chunk
    return data, True


def metric(text: str, name: str) -> float:
    """A sample's value in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_a_slow_client_on_a_latest_only_route_keeps_the_latest_others_are_cut(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(
        overflow_routes={"tick.*.last": "latest_only"},
        client_max_events=20,
        client_max_bytes=20_000,
        socket_send_buffer=4096,
        write_buffer=8192,
        heartbeat=3600,
    )
    hub = server.app[HUB]
    port = int(server.url.rsplit(":", 1)[1])
    routed = stuck_stream(port, "/events/tick.*.last")  # covered by the route: latest_only
    default = stuck_stream(port, "/events/tick.>")  # not covered: the default, disconnect
    try:
        await until(lambda: len(hub.clients) == 2 and server.broker.subscriber_count, "streams")
        assert sorted(c.policy.value for c in hub.clients) == ["disconnect", "latest_only"]
        pad = "x" * 2000
        published = 0
        dropped = 0.0
        while not dropped or len(hub.clients) > 1:  # until both clients' queues overflowed
            assert published < 5000, "the server never backed up"
            server.broker.publish("tick.a.last", {"i": published, "pad": pad})
            published += 1
            await asyncio.sleep(0)
            async with session.get(server.url + "/metrics") as r:
                text = await r.text()
            dropped = metric(text, 'rxstreams_events_dropped_total{policy="latest_only"}')
        assert metric(text, "rxstreams_slow_disconnects_total") == 1
        server.broker.publish("tick.a.last", {"i": "last", "pad": pad})
        data, complete = await read_all(routed, b'"i":"last"')
        assert complete, "the latest_only stream stays open and delivers the latest event"
        received = data.count(b"\ndata: ")
        assert received < published  # what was queued while it did not read was replaced
        assert len(hub.clients) == 1 and next(iter(hub.clients)).policy.value == "latest_only"
        data, complete = await read_all(default, b'"i":"last"')
        assert not complete  # cut off; it would resume from its Last-Event-ID
    finally:
        routed.close()
        default.close()


async def test_client_chosen_overflow_is_checked_against_the_allow_list(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(allowed_overflow=("latest_only",))
    async with session.get(server.url + "/events/a?overflow=drop_oldest") as r:
        assert r.status == 400
        err = (await r.json())["error"]
        assert (err["code"], err["field"], err["allowed"]) == (
            "bad_request",
            "overflow",
            ["latest_only"],
        )
    async with session.get(server.url + "/events/a?overflow=sometimes") as r:
        assert r.status == 400 and (await r.json())["error"]["field"] == "overflow"
    async with session.get(server.url + "/events/a?overflow=latest_only") as r:
        assert r.status == 200
        hub = server.app[HUB]
        assert [c.policy.value for c in hub.clients] == ["latest_only"]

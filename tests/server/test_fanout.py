"""Fan-out on real sockets: shared bytes from the hub, metrics per flush, the write delay,
control messages that no policy drops (issue 11 item 3)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson

from adapters.server import HUB
from adapters.server.delivery import Subscriber

from .test_ws import collect, next_op


class Recording:
    """A transport stand-in that records what is written and forwards it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def sse_lines(resp: aiohttp.ClientResponse, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        line = await resp.content.readline()
        if line.startswith(b"data: "):
            out.append(orjson.loads(line[6:]))
    return out


async def wait_for(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.01)


async def test_caught_up_clients_share_one_frame_per_transport_written_from_the_hub(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server()
    hub = server.app[HUB]
    streams = [
        await session.get(server.url + "/events/room.>", headers={"Accept": accept})
        for accept in ("text/event-stream",) * 3 + ("application/x-ndjson",) * 2
    ]
    sockets = [await session.ws_connect(server.ws_url()) for _ in range(3)]
    for ws in sockets:
        await ws.send_json({"op": "subscribe", "id": "s", "pattern": "room.>"})
        await next_op(ws, "subscribed")
    await wait_for(lambda: len(hub.clients) == 8 and all(c.started for c in hub.clients))
    clients: list[Subscriber] = list(hub.clients)
    recorders = {}
    for c in clients:
        recorders[c] = c.transport = Recording(c.transport)  # type: ignore[assignment]
    server.broker.publish("room.a", {"n": 1})
    for resp in streams[:3]:
        assert [e["data"] for e in await sse_lines(resp, 1)] == [{"n": 1}]
    for resp in streams[3:]:
        line = await resp.content.readline()
        while not line.strip():
            line = await resp.content.readline()
        assert orjson.loads(line)["data"] == {"n": 1}
    for ws in sockets:
        assert [e["data"] for e in await collect(ws, 1)] == [{"n": 1}]
    by_kind: dict[str, list[bytes]] = {}
    for c, rec in recorders.items():
        assert len(rec.writes) == 1, c.kind  # one write each, straight from the hub
        by_kind.setdefault(c.transport_name, []).append(rec.writes[0])
    for name, frames in by_kind.items():
        assert all(f is frames[0] for f in frames), name  # the very same bytes object
    async with session.get(server.url + "/metrics") as r:
        text = await r.text()
    assert 'rxstreams_events_out_total{transport="sse"} 3.0' in text
    assert 'rxstreams_events_out_total{transport="ndjson"} 2.0' in text
    assert 'rxstreams_events_out_total{transport="ws"} 3.0' in text
    for resp in streams:
        resp.close()
    for ws in sockets:
        await ws.close()


async def test_write_delay_is_leading_edge_then_gathers_events_into_one_frame(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(write_delay=1.0)
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "subscribe", "id": "s", "pattern": "t"})
        await next_op(ws, "subscribed")
        server.broker.publish("t", {"i": 0})  # after a quiet period: written at once
        assert orjson.loads(await ws.receive_str())["data"] == {"i": 0}
        for i in range(1, 4):
            server.broker.publish("t", {"i": i})
            await asyncio.sleep(0)  # each event in its own loop iteration
        msg = orjson.loads(await ws.receive_str())
        assert [e["data"]["i"] for e in msg] == [1, 2, 3]  # gathered: one array frame


async def test_sse_heartbeats_and_http10_streams_without_chunking(make_server: Any) -> None:
    server = await make_server(heartbeat=0.05)
    port = int(server.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events/t HTTP/1.0\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    hub = server.app[HUB]
    await wait_for(lambda: any(c.started for c in hub.clients))
    server.broker.publish("t", {"n": 1})
    body = b""
    while b"data: " not in body or b": hb" not in body:
        body += await reader.read(4096)
    lines = body.split(b"\n")
    data = [orjson.loads(x[6:]) for x in lines if x.startswith(b"data: ")]
    assert data[0]["data"] == {"n": 1}
    assert body.startswith(b"retry: 2000\n\n")  # no chunk-size lines
    writer.close()


def _frames(buf: bytearray) -> list[bytes]:
    """Complete unmasked server frames' payloads, consumed from ``buf``."""
    out = []
    while len(buf) >= 2:
        n, start = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, start = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, start = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < start + n:
            break
        if buf[0] & 0x0F == 1:
            out.append(bytes(buf[start : start + n]))
        del buf[: start + n]
    return out


async def test_drop_oldest_never_drops_acks_of_a_client_that_reads_late(
    make_server: Any,
) -> None:
    """Issue 11 item 3: 0 of 20 acks arrived under drop_oldest; now all do, in order,
    while the live events that did not fit are dropped and counted."""
    server = await make_server(
        overflow="drop_oldest",
        client_max_events=50,
        client_max_bytes=20_000,
        socket_send_buffer=4096,
        write_buffer=8192,
    )
    hub = server.app[HUB]
    port = int(server.url.rsplit(":", 1)[1])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    loop = asyncio.get_running_loop()

    async def send(payload: bytes) -> None:
        await loop.sock_sendall(
            s, bytes([0x81, 0xFE]) + len(payload).to_bytes(2, "big") + b"\0" * 4 + payload
        )

    await loop.sock_sendall(
        s,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    await send(b'{"op":"subscribe","id":"s","pattern":"flood"}')
    await wait_for(lambda: server.broker.subscriber_count >= 1)
    (client,) = hub.clients
    big = "x" * 2000
    while client.queue.dropped == 0:  # until the socket is backed up and events drop
        for _ in range(20):
            server.broker.publish("flood", {"pad": big})
        await asyncio.sleep(0.01)
    stored: list[Any] = []
    server.broker.subscribe("other").subscribe(stored.append)
    for i in range(20):
        await send(orjson.dumps({"op": "publish", "ref": f"p{i}", "subject": "other", "data": i}))
    await wait_for(lambda: len(stored) == 20)  # every ack is queued behind live events
    dropped = client.queue.dropped
    for _ in range(100):  # more live events than the queue holds: the oldest must go
        server.broker.publish("flood", {"pad": big})
        await asyncio.sleep(0)
    await wait_for(lambda: client.queue.dropped > dropped)
    buf = bytearray()
    acks: list[str] = []
    head_done = False
    while len(acks) < 20:
        chunk = await loop.sock_recv(s, 65536)
        assert chunk, f"connection closed after {acks}"
        buf += chunk
        if not head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            del buf[: end + 4]
            head_done = True
        for payload in _frames(buf):
            if payload.startswith(b'{"op":"ack"'):
                acks.append(orjson.loads(payload)["ref"])
    assert acks == [f"p{i}" for i in range(20)]
    assert client.queue.dropped > 0 and not client.kicked
    s.close()


async def test_a_backed_up_member_is_queued_while_caught_up_members_keep_receiving(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    """The hub writes caught-up members straight away; a member whose socket is backed
    up is not written from the hub but queued, and gets every event, in order, once it
    reads again."""
    server = await make_server(write_buffer=8192, socket_send_buffer=4096, write_delay=0)
    hub = server.app[HUB]
    port = int(server.url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    slow.setblocking(False)
    sub = b'{"op":"subscribe","id":"s","pattern":"t"}'
    await loop.sock_sendall(
        slow,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        + bytes([0x81, 0x80 | len(sub)])
        + b"\0" * 4
        + sub,
    )
    fast = await session.ws_connect(server.ws_url())
    await fast.send_json({"op": "subscribe", "id": "s", "pattern": "t"})
    await next_op(fast, "subscribed")
    await wait_for(lambda: server.broker.subscriber_count >= 1 and len(hub.clients) == 2)
    (topic,) = hub.topics.values()
    await wait_for(lambda: len(topic.members) == 2)
    here = slow.getsockname()
    (lagging,) = [
        c for c in hub.clients if c.transport and c.transport.get_extra_info("peername") == here
    ]
    pad = "x" * 2000
    n = 0
    while lagging.queue.idle and n < 2000:  # until the slow reader's socket is backed up
        server.broker.publish("t", {"i": n, "pad": pad})
        n += 1
        got = await collect(fast, 1)  # the reading member is never held back
        assert got[0]["data"]["i"] == n - 1
    assert not lagging.queue.idle, "4 MB into a socket that is not read, none of it queued"
    for _ in range(5):  # more, while the slow one is backed up: queued for it
        server.broker.publish("t", {"i": n, "pad": pad})
        n += 1
        assert (await collect(fast, 1))[0]["data"]["i"] == n - 1
    assert lagging.queue.events or lagging.slow_task is not None
    buf = bytearray()
    seen: list[int] = []
    head_done = False
    while len(seen) < n:
        chunk = await loop.sock_recv(slow, 65536)
        assert chunk, f"connection closed after {seen}"
        buf += chunk
        if not head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            del buf[: end + 4]
            head_done = True
        for payload in _frames(buf):
            msg = orjson.loads(payload)
            if isinstance(msg, dict) and "op" in msg:
                continue
            seen.extend(e["data"]["i"] for e in (msg if isinstance(msg, list) else [msg]))
    assert seen == list(range(n))
    slow.close()
    await fast.close()

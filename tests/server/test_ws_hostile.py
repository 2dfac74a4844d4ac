"""The WebSocket bad-input table (issue 11, "also expected"), over real sockets: wrong field
types, binary frames, fragmented and oversized frames, and a client that sends thousands
of subscriptions without reading a reply. Each gets what docs/PROTOCOL.md says, and
another client keeps receiving throughout."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.server import HUB

from .conftest import Server
from .test_ws import collect, next_op

# (message, code, field): every message gets one error op; the connection stays open.
WRONG_TYPES: list[tuple[str, str, str | None]] = [
    ("[]", "bad_json", None),
    ('"subscribe"', "bad_json", None),
    ("7", "bad_json", None),
    ("null", "bad_json", None),
    ('{"op": 1}', "unknown_op", None),
    ('{"op": null}', "unknown_op", None),
    ('{"op": ["subscribe"]}', "unknown_op", None),
    ('{"op": "subscribe", "id": 7, "pattern": "a"}', "bad_request", "id"),
    ('{"op": "subscribe", "id": "", "pattern": "a"}', "bad_request", "id"),
    ('{"op": "subscribe", "id": "' + "x" * 200 + '", "pattern": "a"}', "bad_request", "id"),
    ('{"op": "subscribe", "id": "x", "pattern": ["a"]}', "bad_subject", "pattern"),
    ('{"op": "subscribe", "id": "x", "pattern": "a", "since": 5}', "bad_position", "since"),
    ('{"op": "subscribe", "id": "x", "pattern": "a", "since": "e-1e5"}', "bad_position", "since"),
    ('{"op": "subscribe", "id": "x", "pattern": "a", "filter": [1]}', "bad_request", "filter"),
    ('{"op": "subscribe", "id": "x", "pattern": "a", "filter": {"type": {}}}', "bad_request",
     "filter"),
    ('{"op": "subscribe", "id": "x", "pattern": "a", "overflow": 3}', "bad_request", "overflow"),
    ('{"op": "unsubscribe", "id": 5}', "bad_request", "id"),
    ('{"op": "unsubscribe"}', "bad_request", "id"),
    ('{"op": "publish", "subject": 5}', "bad_subject", "subject"),
    ('{"op": "publish", "subject": "a", "ref": 5}', "bad_request", "ref"),
    ('{"op": "publish", "subject": "a", "type": 5}', "bad_event", "type"),
    ('{"op": "publish", "subject": "a", "event": "x"}', "bad_event", "event"),
    ('{"op": "publish", "subject": "a", "event": {"specversion": "1.0", "id": "1", '
     '"source": "s", "type": "t", "time": 5}}', "bad_event", "time"),
    ('{"op": "publish", "subject": "a", "event": {"specversion": "1.0", "id": "1", '
     '"source": "s", "type": "t", "data_base64": 5}}', "bad_event", "data_base64"),
    ('{"op": "auth", "token": 5}', "bad_request", "token"),
    ('{"op": "auth"}', "bad_request", "token"),
]  # fmt: skip


async def test_wrong_field_types_get_their_documented_error(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async with (
        session.ws_connect(server.ws_url()) as good,
        session.ws_connect(server.ws_url()) as bad,
    ):
        await good.send_json({"op": "subscribe", "id": "s", "pattern": "live"})
        await next_op(good, "subscribed")
        for i, (raw, code, field) in enumerate(WRONG_TYPES):
            await bad.send_str(raw)
            err = await next_op(bad, "error")
            assert (err["code"], err.get("field")) == (code, field), raw
            assert len(err.get("ref") or "") <= 128  # never echoes an arbitrary string
            server.broker.publish("live", {"i": i})
            (got,) = await collect(good, 1)
            assert got["data"] == {"i": i}
        await bad.send_json({"op": "subscribe", "id": "ok", "pattern": "a"})
        assert (await next_op(bad, "subscribed"))["id"] == "ok"


async def test_binary_frames_are_read_like_text_frames(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_bytes(b'{"op": "subscribe", "id": "b", "pattern": "a"}')
        assert (await next_op(ws, "subscribed"))["id"] == "b"
        for junk in (b"\xff\xfe", b"\x00" * 10, b'{"op": "x"'):
            await ws.send_bytes(junk)
            assert (await next_op(ws, "error"))["code"] == "bad_json"
        await ws.send_bytes("[1, \udc80]".encode("utf-8", "surrogatepass"))
        assert (await next_op(ws, "error"))["code"] == "bad_json"
        server.broker.publish("a", 1)
        (got,) = await collect(ws, 1)
        assert got["data"] == 1


# -- raw frames: fragmentation, oversized frames, a client that does not read -------------------
class RawWebSocket:
    """A minimal RFC 6455 client over a plain socket, to send what aiohttp's client will not
    (fragments, frames larger than the server accepts) and to not read at all."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: Server, recv_buffer: int | None = None) -> RawWebSocket:
        host, port = server.url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if recv_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        mask = os.urandom(4)
        first = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", first, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", first, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    async def recv(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(n)

    async def next_json(self) -> Any:
        while True:
            opcode, payload = await self.recv()
            if opcode == 0x8:
                raise ConnectionError(f"closed {struct.unpack('!H', payload[:2])[0]}")
            if opcode == 0x1:
                return orjson.loads(payload)

    async def close_code(self, timeout: float = 5) -> int:
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.recv()
                if opcode == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0])

    def close(self) -> None:
        self.writer.close()


TEXT, CONT, BINARY = 0x1, 0x0, 0x2


async def test_fragmented_frames_are_one_message(make_server: Any) -> None:
    server = await make_server(max_message_bytes=1000)
    ws = await RawWebSocket.connect(server)
    msg = b'{"op": "subscribe", "id": "frag", "pattern": "a"}'
    ws.send(TEXT, msg[:10], fin=False)
    ws.send(CONT, msg[10:20], fin=False)
    ws.send(0x9, b"ping")  # a control frame between fragments is allowed
    ws.send(CONT, msg[20:])
    assert await ws.next_json() == {"op": "subscribed", "id": "frag"}
    # fragments adding up to more than the limit: too_large, the connection is kept
    big = b'{"op": "publish", "subject": "a", "data": "' + b"x" * 1500 + b'"}'
    for i in range(0, len(big), 100):
        ws.send(TEXT if i == 0 else CONT, big[i : i + 100], fin=i + 100 >= len(big))
    err = await ws.next_json()
    assert (err["op"], err["code"], err["limit"]) == ("error", "too_large", 1000)
    # a fragment sequence broken by a new text frame is a protocol error: close 1002
    ws.send(TEXT, b'{"op":', fin=False)
    ws.send(TEXT, b"{}")
    assert await ws.close_code() == 1002
    ws.close()


async def test_oversized_frames_too_large_then_close_1009(make_server: Any) -> None:
    server = await make_server(max_message_bytes=1000)
    ws = await RawWebSocket.connect(server)
    ws.send(TEXT, b'{"op": "publish", "subject": "a", "data": "' + b"x" * 2000 + b'"}')
    err = await ws.next_json()
    assert (err["code"], err["limit"]) == ("too_large", 1000)
    ws.send(BINARY, b"x" * 5000)  # more than four times the limit, in one frame
    assert await ws.close_code() == 1009
    ws.close()
    ws = await RawWebSocket.connect(server)
    for i in range(0, 5000, 500):  # the same in fragments
        ws.send(TEXT if i == 0 else CONT, b"x" * 500, fin=i + 500 >= 5000)
    assert await ws.close_code() == 1009
    ws.close()


@pytest.mark.timeout(60)
async def test_thousands_of_subscriptions_without_reading_replies(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(
        max_subscriptions=100,
        client_max_events=1000,
        client_max_bytes=64 * 1024,
        socket_send_buffer=4096,
        write_buffer=4096,
    )
    async with session.ws_connect(server.ws_url()) as good:
        await good.send_json({"op": "subscribe", "id": "s", "pattern": "live"})
        await next_op(good, "subscribed")
        flood = await RawWebSocket.connect(server, recv_buffer=4096)
        sent = 0
        with contextlib.suppress(ConnectionError):
            for i in range(5000):
                ops = {"op": "subscribe", "id": f"sub-{i:05d}-" + "p" * 100, "pattern": f"f.{i}"}
                flood.send(TEXT, orjson.dumps(ops))
                sent += 1
                if i % 250 == 0:
                    await flood.writer.drain()
                    server.broker.publish("live", {"i": i})  # another client is served
                    (got,) = await collect(good, 1)
                    assert got["data"] == {"i": i}
                    assert all(len(c.subs) <= 100 for c in server.app[HUB].clients)
            await flood.writer.drain()
        # Replies come in order; a client that does not read them is cut off like any slow
        # consumer once its bounded queue is full (close 1008, or a reset when even the
        # close frame cannot get through): nothing grows without bound.
        answers: list[str] = []
        end = "complete"
        try:
            while len(answers) < sent:
                answers.append((await asyncio.wait_for(flood.next_json(), 10))["op"])
        except (ConnectionResetError, asyncio.IncompleteReadError):
            end = "reset"  # what the socket still held is lost with the reset
        except ConnectionError as exc:
            end = str(exc)
        flood.close()
        assert answers[:100] == ["subscribed"] * min(100, len(answers))
        assert set(answers[100:]) <= {"error"}
        assert end in ("closed 1008", "reset"), (end, sent, len(answers))
        assert sent < 5000 or len(answers) < sent  # the flood was cut off
        await asyncio.sleep(0.1)
        assert len(server.app[HUB].clients) == 1  # the flooder is released
        server.broker.publish("live", {"i": "after"})
        (got,) = await collect(good, 1)
        assert got["data"] == {"i": "after"}

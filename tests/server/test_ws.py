"""WebSocket endpoint over real sockets: ops, errors, limits, slow clients, resume, auth."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from adapters.server import HUB, AuthConfig
from streams import Event, MemoryBroker, Retention

from .conftest import Server


def events_of(msg: Any) -> list[dict[str, Any]]:
    return msg if isinstance(msg, list) else [msg]


async def next_op(ws: aiohttp.ClientWebSocketResponse, op: str) -> dict[str, Any]:
    while True:
        msg = orjson.loads(await ws.receive_str())
        if isinstance(msg, dict) and msg.get("op") == op:
            return msg


async def collect(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        msg = orjson.loads(await ws.receive_str())
        if isinstance(msg, dict) and "op" in msg:
            continue
        out.extend(events_of(msg))
    return out


async def test_subscribe_publish_ack_unsubscribe(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "subscribe", "id": "s1", "pattern": "chat.*.msg"})
        assert await next_op(ws, "subscribed") == {"op": "subscribed", "id": "s1"}
        await ws.send_json(
            {"op": "publish", "ref": "p1", "subject": "chat.a.msg", "data": {"t": 1}}
        )
        ack = await next_op(ws, "ack")
        assert ack == {"op": "ack", "ref": "p1", "position": f"{server.broker.epoch}-1"}
        (event,) = await collect(ws, 1)
        assert event["data"] == {"t": 1} and event["sequence"] == ack["position"]
        await ws.send_json({"op": "unsubscribe", "id": "s1"})
        assert (await next_op(ws, "unsubscribed"))["id"] == "s1"
        assert server.broker.subscriber_count == 0


async def test_burst_is_coalesced_into_one_array_frame(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "subscribe", "id": "s", "pattern": "b.>"})
        await next_op(ws, "subscribed")
        for i in range(50):
            server.broker.publish("b.x", {"i": i})
        frame = orjson.loads(await ws.receive_str())
        assert isinstance(frame, list) and [e["data"]["i"] for e in frame] == list(range(50))


async def test_filter_and_since_replay(server: Server, session: aiohttp.ClientSession) -> None:
    b = server.broker
    for room in ("a", "b", "a"):
        b.publish(f"r.{room}", Event.create({"room": room}, type="msg"))
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json(
            {
                "op": "subscribe",
                "id": "f",
                "pattern": "r.*",
                "since": f"{b.epoch}-0",
                "filter": {"type": "msg", "data.room": "a"},
            }
        )
        got = await collect(ws, 2)
        assert [e["sequence"] for e in got] == [f"{b.epoch}-1", f"{b.epoch}-3"]


async def test_gap_op_then_continues_from_earliest(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    broker = MemoryBroker(Retention(max_events=2, max_per_subject=None))
    server = await make_server(broker)
    for i in range(6):
        broker.publish("g.x", i)
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "subscribe", "id": "g", "pattern": "g.x", "since": "zz-1"})
        gap = await next_op(ws, "gap")
        assert gap["id"] == "g" and gap["earliest"] == str(broker.earliest())
        got = await collect(ws, len(broker.history("g.x")))
        assert got[0]["sequence"] == str(broker.earliest())


BAD = [
    ("{nope", "bad_json"),
    ('{"op": "fly", "ref": "x"}', "unknown_op"),
    ('{"op": "subscribe", "id": "q", "pattern": "a..b"}', "bad_subject"),
    ('{"op": "subscribe", "id": "q", "pattern": "a", "since": "x"}', "bad_position"),
    ('{"op": "unsubscribe", "id": "never"}', "not_subscribed"),
    ('{"op": "publish", "subject": "a", "event": {"specversion": "1.0"}}', "bad_event"),
    ('{"op": "subscribe", "id": "s2", "pattern": "x"}', "too_many_subscriptions"),
    ('{"op": "publish", "subject": "a", "data": "' + "x" * 3000 + '"}', "too_large"),
]


async def test_bad_messages_answered_while_another_client_keeps_receiving(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(max_subscriptions=1, max_message_bytes=2000)
    async with (
        session.ws_connect(server.ws_url()) as good,
        session.ws_connect(server.ws_url()) as bad,
    ):
        await good.send_json({"op": "subscribe", "id": "s", "pattern": "live"})
        await next_op(good, "subscribed")
        await bad.send_json({"op": "subscribe", "id": "s1", "pattern": "y"})
        await next_op(bad, "subscribed")
        for i, (raw, code) in enumerate(BAD):
            await bad.send_str(raw)
            err = await next_op(bad, "error")
            assert err["code"] == code, raw
            server.broker.publish("live", {"i": i})
            (got,) = await collect(good, 1)
            assert got["data"] == {"i": i}
        assert not bad.closed


async def test_publish_rate_limited_per_connection(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(publish_rate=0.001, publish_burst=2)
    async with session.ws_connect(server.ws_url()) as ws:
        for ref in ("a", "b", "c"):
            await ws.send_json({"op": "publish", "ref": ref, "subject": "r", "data": 1})
        answers = [orjson.loads(await ws.receive_str()) for _ in range(3)]
    assert [a["op"] for a in answers] == ["ack", "ack", "error"]
    assert answers[2]["code"] == "rate_limited" and answers[2]["ref"] == "c"
    assert 990 < answers[2]["retry_after"] <= 1000  # one token at 0.001/s


async def test_origin_allow_list(make_server: Any, session: aiohttp.ClientSession) -> None:
    server = await make_server(origins=("https://ok.example",))
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(server.ws_url(), headers={"Origin": "https://evil.example"})
    assert info.value.status == 403
    async with session.ws_connect(server.ws_url(), headers={"Origin": "https://ok.example"}):
        pass


# -- auth --------------------------------------------------------------------------------
KEY = "test-secret-key-of-at-least-32-bytes!"


def token(**claims: Any) -> str:
    return jwt.encode(claims, KEY, algorithm="HS256")


async def test_auth_every_401_403_and_allowed_case(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(auth=AuthConfig(key=KEY))
    good = token(sub="ada", subscribe=["chat.>"], publish=["chat.lobby.*"])

    async def status(method: str, path: str, **kw: Any) -> tuple[int, str | None]:
        async with session.request(method, server.url + path, **kw) as r:
            if r.status >= 400:
                return r.status, (await r.json())["error"]["code"]
            return r.status, None

    bearer = {"Authorization": f"Bearer {good}"}
    assert await status("GET", "/poll/chat.>?timeout=0") == (401, "unauthorized")
    assert await status("GET", "/poll/chat.>?timeout=0&token=garbage") == (401, "unauthorized")
    expired = token(exp=1, subscribe=[">"])
    assert await status("GET", f"/poll/chat.>?timeout=0&token={expired}") == (401, "unauthorized")
    assert await status("GET", "/poll/other?timeout=0", headers=bearer) == (403, "forbidden")
    assert await status("GET", "/poll/>?timeout=0", headers=bearer) == (403, "forbidden")
    assert await status("GET", f"/poll/chat.x.>?timeout=0&token={good}") == (200, None)
    assert await status("POST", "/events/chat.dev.msg", json=1, headers=bearer) == (
        403,
        "forbidden",
    )
    assert await status("POST", "/events/chat.lobby.msg", json=1) == (401, "unauthorized")
    assert await status("POST", "/events/chat.lobby.msg", json=1, headers=bearer) == (202, None)
    async with session.get(server.url + "/events/chat.>", headers=bearer) as r:
        assert r.status == 200
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(server.ws_url())
    assert info.value.status == 401
    async with session.ws_connect(server.ws_url(f"/ws?token={good}")) as ws:
        await ws.send_json({"op": "subscribe", "id": "no", "pattern": "secret.>"})
        err = await next_op(ws, "error")
        assert (err["code"], err["ref"]) == ("forbidden", "no")
        await ws.send_json({"op": "publish", "ref": "p", "subject": "chat.dev.msg", "data": 1})
        err = await next_op(ws, "error")
        assert (err["code"], err["ref"]) == ("forbidden", "p")
        await ws.send_json({"op": "subscribe", "id": "ok", "pattern": "chat.lobby.>"})
        await next_op(ws, "subscribed")
        await ws.send_json({"op": "publish", "ref": "p2", "subject": "chat.lobby.msg", "data": 2})
        assert (await next_op(ws, "ack"))["ref"] == "p2"


# -- resume --------------------------------------------------------------------------------
async def test_disconnect_mid_stream_and_resume_nothing_missing_nothing_duplicated(
    server: Server, session: aiohttp.ClientSession
) -> None:
    b = server.broker
    total = 300
    seen: list[int] = []
    last = None

    async def publisher() -> None:
        for i in range(total):
            b.publish("res.x", {"i": i})
            if i % 7 == 0:
                await asyncio.sleep(0)

    task = None
    rounds = 0
    while len(seen) < total:
        rounds += 1
        headers: dict[str, str] = {"Last-Event-ID": last} if last else {}
        async with session.get(server.url + "/events/res.x", headers=headers) as r:
            if task is None:
                task = asyncio.ensure_future(publisher())
            buf = b""
            got_here = 0
            while got_here < 40 and len(seen) < total:
                buf += await r.content.readany()
                while b"\n\n" in buf and got_here < 40:  # the rest is lost with the drop
                    block, buf = buf.split(b"\n\n", 1)
                    lines = dict(
                        line.split(": ", 1) for line in block.decode().split("\n") if ": " in line
                    )
                    if "data" in lines:
                        seen.append(orjson.loads(lines["data"])["data"]["i"])
                        last = lines["id"]
                        got_here += 1
        # leaving the block drops the connection mid-stream
    assert task is not None
    await task
    assert seen == list(range(total)) and rounds > 2


# -- slow consumers --------------------------------------------------------------------
def raw_ws(
    port: int, subscribe: bytes = b'{"op":"subscribe","id":"s","pattern":"flood"}'
) -> socket.socket:
    """A WebSocket client on a tiny receive buffer that subscribes and then never reads."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    payload = subscribe
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
    s.setblocking(False)
    return s


SUBSCRIBE = b'{"op":"subscribe","id":"s","pattern":"flood"}'
CHOOSE = b'{"op":"subscribe","id":"s","pattern":"flood","overflow":"drop_oldest"}'


@pytest.mark.parametrize(
    ("policy", "config", "subscribe"),
    [
        ("disconnect", {}, SUBSCRIBE),
        ("drop_oldest", {"overflow": "drop_oldest"}, SUBSCRIBE),
        ("latest_only", {"overflow": "latest_only"}, SUBSCRIBE),
        ("latest_only", {"overflow_routes": {"flood": "latest_only"}}, SUBSCRIBE),
        ("drop_oldest", {"allowed_overflow": ("drop_oldest",)}, CHOOSE),
    ],
    ids=["default", "app-drop_oldest", "app-latest_only", "route", "client-choice"],
)
async def test_a_client_that_never_reads_harms_nobody(
    make_server: Any,
    session: aiohttp.ClientSession,
    policy: str,
    config: dict[str, Any],
    subscribe: bytes,
) -> None:
    server = await make_server(
        **config,
        client_max_events=50,
        client_max_bytes=20_000,
        socket_send_buffer=4096,
        write_buffer=8192,
    )
    port = int(server.url.rsplit(":", 1)[1])
    hub = server.app[__import__("adapters.server", fromlist=["HUB"]).HUB]
    stuck = raw_ws(port, subscribe)
    try:
        async with session.ws_connect(server.ws_url()) as good:
            await good.send_json({"op": "subscribe", "id": "g", "pattern": "flood"})
            await next_op(good, "subscribed")
            while server.broker.subscriber_count < 1 or len(hub.clients) < 2:
                await asyncio.sleep(0.01)
            big = "x" * 2000
            rounds = 200
            for i in range(rounds):
                for _ in range(5):
                    server.broker.publish("flood", {"i": i, "pad": big})
                got = await collect(good, 5)
                assert all(e["data"]["i"] == i for e in got)
                for c in hub.clients:  # bounded: never past the queue limit (+ one batch)
                    assert c.queue.bytes <= 20_000 + 5 * 2200
            async with session.get(server.url + "/metrics") as r:
                text = await r.text()
            dropped_line = f'rxstreams_events_dropped_total{{policy="{policy}"}}'
            assert dropped_line in text
            dropped = float(text.split(dropped_line)[1].split()[0])
            assert dropped > 0
            if policy == "disconnect":
                assert "rxstreams_slow_disconnects_total 1.0" in text
                while len(hub.clients) > 1:
                    await asyncio.sleep(0.01)
            else:
                assert len(hub.clients) == 2
    finally:
        stuck.close()


async def test_one_websocket_queue_takes_the_least_lossy_policy_of_its_subscriptions(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(
        overflow_routes={"typing.>": "latest_only", "metrics.>": "drop_oldest"},
        allowed_overflow=("latest_only",),
    )
    hub = server.app[HUB]
    async with session.ws_connect(server.ws_url()) as ws:
        (client,) = hub.clients

        async def subscribe(sid: str, pattern: str, **extra: Any) -> str:
            await ws.send_json({"op": "subscribe", "id": sid, "pattern": pattern, **extra})
            await next_op(ws, "subscribed")
            return str(client.policy.value)

        assert await subscribe("t", "typing.lobby") == "latest_only"
        assert await subscribe("m", "metrics.cpu") == "drop_oldest"
        assert await subscribe("c", "chat.lobby") == "disconnect"  # no route: the default
        await ws.send_json({"op": "unsubscribe", "id": "c"})
        await next_op(ws, "unsubscribed")
        assert client.policy.value == "drop_oldest"
        await ws.send_json({"op": "unsubscribe", "id": "m"})
        await next_op(ws, "unsubscribed")
        assert client.policy.value == "latest_only"
        assert await subscribe("x", "chat.x", overflow="latest_only") == "latest_only"
        for bad in ("drop_oldest", "whenever", 3):
            await ws.send_json({"op": "subscribe", "id": "y", "pattern": "a", "overflow": bad})
            err = await next_op(ws, "error")
            assert (err["code"], err["field"], err["ref"]) == ("bad_request", "overflow", "y")
        assert set(client.subs) == {"t", "x"}

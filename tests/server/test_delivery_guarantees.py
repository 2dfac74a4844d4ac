"""Delivery guarantees over real sockets: a resumed backlog larger than the client's queue
arrives whole under every policy; broker failures are answered, not fatal; subscriptions
to one pattern are counted; events that cannot be encoded are skipped, not fatal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
import pytest

from streams import Event, MemoryBroker, Position, PublishError, Retention

from .conftest import Server
from .test_http import SSE_HEADERS, metric, read_sse
from .test_ws import collect, next_op

BACKLOG = 3000
POLICIES = ["disconnect", "drop_oldest", "latest_only"]


async def backlog_server(make_server: Any, policy: str) -> tuple[Server, str]:
    """A server whose broker retains ``BACKLOG`` events on three subjects, with client
    queues of 100 events; returns it and the position just before the first event."""
    broker = MemoryBroker(Retention(max_events=10_000, max_per_subject=10_000))
    server = await make_server(broker, client_max_events=100, overflow=policy)
    for room in range(3):
        broker.publish_many(f"back.r{room}", [{"i": room * 1000 + i} for i in range(1000)])
    return server, f"{broker.epoch}-0"


@pytest.mark.parametrize("policy", POLICIES)
async def test_sse_resume_of_a_backlog_larger_than_the_queue_arrives_whole(
    make_server: Any, session: aiohttp.ClientSession, policy: str
) -> None:
    server, since = await backlog_server(make_server, policy)
    headers = {**SSE_HEADERS, "Last-Event-ID": since}
    async with session.get(server.url + "/events/back.>", headers=headers) as r:
        got = await read_sse(r, BACKLOG)
        server.broker.publish("back.r0", {"i": "live"})  # then it is live
        (live,) = await read_sse(r, 1)
    assert [e["data"]["data"]["i"] for e in got] == list(range(BACKLOG))
    assert live["data"]["data"]["i"] == "live"
    async with session.get(server.url + "/metrics") as m:
        text = await m.text()
    assert metric(text, "rxstreams_slow_disconnects_total") == 0


@pytest.mark.parametrize("policy", POLICIES)
async def test_ws_resume_of_a_backlog_larger_than_the_queue_arrives_whole(
    make_server: Any, session: aiohttp.ClientSession, policy: str
) -> None:
    server, since = await backlog_server(make_server, policy)
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "subscribe", "id": "b", "pattern": "back.>", "since": since})
        got = await collect(ws, BACKLOG)
        server.broker.publish("back.r2", {"i": "live"})
        (live,) = await collect(ws, 1)
    assert [e["data"]["i"] for e in got] == list(range(BACKLOG))
    assert live["data"]["i"] == "live"


async def test_ws_resume_beside_a_live_subscription_loses_nothing_of_the_backlog(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    """The live subscription's policy (drop_oldest) may drop its own events, never the
    resumed subscription's."""
    server, since = await backlog_server(make_server, "drop_oldest")
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "subscribe", "id": "l", "pattern": "live.x"})
        await next_op(ws, "subscribed")
        await ws.send_json({"op": "subscribe", "id": "b", "pattern": "back.>", "since": since})
        for i in range(500):
            server.broker.publish("live.x", {"i": -i})
        got = await collect(ws, BACKLOG)
        backlog = [e["data"]["i"] for e in got if e["subject"].startswith("back.")]
        while len(backlog) < BACKLOG:
            more = await collect(ws, 1)
            backlog += [e["data"]["i"] for e in more if e["subject"].startswith("back.")]
    assert backlog == list(range(BACKLOG))


# -- broker failures ----------------------------------------------------------------
class FailingBroker(MemoryBroker):
    """A real MemoryBroker whose publishes fail as a networked broker's can."""

    def __init__(self, committed: Sequence[Position] = (), exc: Exception | None = None):
        super().__init__()
        self.exc = exc or PublishError("broker down", committed)

    async def apublish_many(self, subject: str, events: Sequence[Any]) -> list[Position]:
        raise self.exc

    async def apublish(self, subject: str, event: Any) -> Position:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "committed"),
    [
        (PublishError("broker down", [Position("e", 7)]), ["e-7"]),
        (ConnectionResetError("reset by peer"), []),
    ],
)
async def test_ingest_broker_failure_answers_503_unavailable_with_committed(
    make_server: Any, session: aiohttp.ClientSession, exc: Exception, committed: list[str]
) -> None:
    broker = FailingBroker(exc=exc)
    server = await make_server(broker)
    async with session.post(server.url + "/events/a.b", json=[1, 2, 3]) as r:
        assert r.status == 503 and r.content_type == "application/json"
        assert r.headers["Retry-After"] == "1"
        err = (await r.json())["error"]
    assert (err["code"], err["committed"]) == ("unavailable", committed)
    assert str(exc) in err["message"]
    assert broker.published == 0 and len(broker) == 0


async def test_ingest_publishes_a_batch_in_one_broker_call(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    calls: list[int] = []

    class Counting(MemoryBroker):
        async def apublish_many(self, subject: str, events: Sequence[Any]) -> list[Position]:
            calls.append(len(events))
            return await super().apublish_many(subject, events)

        async def apublish(self, subject: str, event: Any) -> Position:
            raise AssertionError("one call per batch, not per event")

    server = await make_server(Counting())
    async with session.post(server.url + "/events/a.b", json=[1, 2, 3]) as r:
        assert r.status == 202 and len((await r.json())["positions"]) == 3
    assert calls == [3]


async def test_ws_publish_broker_failure_answers_unavailable_and_keeps_the_connection(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(FailingBroker())
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "publish", "ref": "p1", "subject": "a.b", "data": 1})
        err = await next_op(ws, "error")
        assert (err["code"], err["ref"], err["committed"]) == ("unavailable", "p1", [])
        await ws.send_json({"op": "subscribe", "id": "s", "pattern": "a.b"})
        assert (await next_op(ws, "subscribed"))["id"] == "s"
        server.broker.publish("a.b", {"still": "open"})
        (event,) = await collect(ws, 1)
        assert event["data"] == {"still": "open"}


# -- subscriptions to one pattern -------------------------------------------------------
async def test_unsubscribing_one_of_two_subscriptions_to_a_pattern_keeps_the_other(
    server: Server, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url()) as ws:
        for sid in ("s1", "s2"):
            await ws.send_json({"op": "subscribe", "id": sid, "pattern": "dup.room"})
            await next_op(ws, "subscribed")
        server.broker.publish("dup.room", {"n": 0})
        assert [e["data"]["n"] for e in await collect(ws, 1)] == [0]  # once, not twice
        await ws.send_json({"op": "unsubscribe", "id": "s1"})
        await next_op(ws, "unsubscribed")
        server.broker.publish("dup.room", {"n": 1})
        assert [e["data"]["n"] for e in await collect(ws, 1)] == [1]
        await ws.send_json({"op": "unsubscribe", "id": "s2"})
        await next_op(ws, "unsubscribed")
        assert server.broker.subscriber_count == 0


# -- events that cannot be encoded ------------------------------------------------------
async def test_an_unencodable_event_is_skipped_and_delivery_continues(
    server: Server, session: aiohttp.ClientSession
) -> None:
    b = server.broker
    b.publish("enc.x", {"i": 0})
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "subscribe", "id": "live", "pattern": "enc.x"})
        await next_op(ws, "subscribed")
        since = f"{b.epoch}-0"
        await ws.send_json(
            {"op": "subscribe", "id": "f", "pattern": "enc.>", "filter": {"type": "t"}}
        )
        await next_op(ws, "subscribed")
        async with session.get(
            server.url + "/events/enc.x", headers={**SSE_HEADERS, "Last-Event-ID": since}
        ) as sse:
            assert (await read_sse(sse, 1))[0]["data"]["data"] == {"i": 0}
            b.publish("enc.x", Event.create({"bad": object()}, type="t"))
            b.publish("enc.x", Event.create({"i": 2}, type="t"))
            assert (await read_sse(sse, 1))[0]["data"]["data"] == {"i": 2}
        got = await collect(ws, 2)  # once from "live", once from "f"
        assert [e["data"] for e in got] == [{"i": 2}, {"i": 2}]
    assert b.failed_subscribers == 0
    async with session.get(server.url + "/metrics") as m:
        assert metric(await m.text(), "rxstreams_events_unencodable_total") == 3


# -- message size -------------------------------------------------------------------------
async def test_ws_message_limit_counts_utf8_bytes(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(max_message_bytes=1000)
    text = "é" * 600  # 600 characters, 1,200 bytes
    msg = orjson.dumps({"op": "publish", "ref": "big", "subject": "a.b", "data": text}).decode()
    assert len(msg) < 1000 < len(msg.encode())
    async with session.ws_connect(server.ws_url()) as ws:
        await ws.send_str(msg)
        err = await next_op(ws, "error")
        assert (err["code"], err["limit"]) == ("too_large", 1000)
    assert server.broker.published == 0

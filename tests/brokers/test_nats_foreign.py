"""Another producer's messages on the NATS stream (plain nats-py): each becomes an event or
is skipped and counted, and no subscription or worker ever ends because of one. The stream
exists once ``connect()`` returned, and ``health()`` says how the broker stands."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext

from adapters.brokers import NatsBroker
from adapters.brokers.foreign import EXTERNAL_TYPE
from streams import Event, Position

from .conftest import Collector, build, dispose

pytestmark = pytest.mark.broker

GUARD = 20.0  # turns a hang into a failure; never a timed assertion
TOO_DEEP = b"[" * 300 + b"]" * 300  # orjson reads it but cannot write it back


@pytest.fixture
async def outside() -> AsyncIterator[tuple[NatsBroker, JetStreamContext]]:
    """A connected broker on a fresh stream, and a plain nats-py producer beside it."""
    broker: NatsBroker = build("nats")
    await broker.connect()
    nc = await nats.connect(broker.url)
    try:
        yield broker, nc.jetstream()
    finally:
        await nc.close()
        await dispose(broker)


async def publish_foreign(broker: NatsBroker, js: JetStreamContext) -> dict[str, Position]:
    """The four kinds of foreign message, in order; their positions by name."""
    wire = f"{broker.stream}.ext.plain"
    cloud = Event.create({"ok": True}, id="ce-1", type="com.example.thing").encode()
    sent = {
        "plain": await js.publish(wire, b'{"amount":6}', headers={"Nats-Msg-Id": "m-6"}),
        "binary": await js.publish(wire, b"\xff\xfe"),
        "cloud": await js.publish(wire, cloud),
        "deep": await js.publish(wire, TOO_DEEP),
        "anonymous": await js.publish(wire, b"[1, 2]"),
    }
    return {name: Position(broker.epoch, ack.seq) for name, ack in sent.items()}


def check_readable(events: list[Event], at: dict[str, Position], stream: str) -> None:
    plain, cloud, anonymous = events
    assert plain.type == EXTERNAL_TYPE and plain.data == {"amount": 6} and plain.id == "m-6"
    assert plain.subject == "ext.plain" and plain.sequence == str(at["plain"])
    assert plain.source == f"nats://{stream}"
    assert (cloud.id, cloud.type, cloud.data) == ("ce-1", "com.example.thing", {"ok": True})
    assert cloud.sequence == str(at["cloud"])
    assert anonymous.data == [1, 2] and anonymous.id == f"nats://{stream}/{at['anonymous']}"


async def test_foreign_messages_become_events_or_are_skipped_and_subscriptions_go_on(
    outside: tuple[NatsBroker, JetStreamContext],
) -> None:
    broker, js = outside
    before = await broker.apublish("ext.plain", {"n": 0})
    live = Collector(broker.subscribe("ext.>", since=await broker.last_position()))
    resumed = Collector(broker.subscribe(">", since=before))
    at = await publish_foreign(broker, js)
    after = await broker.apublish("ext.plain", {"n": 1})

    events = await live.count(4)
    check_readable(events[:3], at, broker.stream)
    assert events[3].data == {"n": 1} and events[3].sequence == str(after)
    check_readable((await resumed.count(4))[:3], at, broker.stream)
    assert broker.skipped.count == 4  # two unreadable messages, each read by two subscribers

    for since, expect in [(at["binary"], 3), (at["deep"], 2), (before, 4)]:
        later = Collector(broker.subscribe("ext.plain", since=since))
        assert (await later.count(expect))[-1].sequence == str(after)
        later.disposable.dispose()
    await broker.apublish("ext.plain", {"n": 2})  # the first two are still live
    assert (await live.count(5))[-1].data == {"n": 2}
    assert (await resumed.count(5))[-1].data == {"n": 2}
    assert live.error is None and resumed.error is None


async def test_workers_acknowledge_unreadable_messages_and_handle_the_rest(
    outside: tuple[NatsBroker, JetStreamContext],
) -> None:
    broker, js = outside
    at = await publish_foreign(broker, js)
    await broker.apublish("ext.plain", {"n": 1})
    handled: list[Event] = []
    enough = asyncio.Event()
    stop = asyncio.Event()

    async def handle(events: list[Event]) -> None:
        handled.extend(events)
        if len(handled) >= 4:
            enough.set()

    worker = asyncio.create_task(broker.consume("g1", "ext.>", handle, stop=stop))
    try:
        await asyncio.wait_for(enough.wait(), GUARD)
        check_readable(handled[:3], at, broker.stream)
        assert handled[3].data == {"n": 1}
        _, admin = await broker._client()

        async def settled() -> Any:
            while (info := await admin.consumer_info(broker.stream, "g1")).num_ack_pending:
                await asyncio.sleep(0.05)
            return info

        info = await asyncio.wait_for(settled(), GUARD)
        assert info.num_pending == 0  # the junk was acknowledged, not left to redeliver
        assert broker.skipped.count == 2
    finally:
        stop.set()
        await asyncio.wait_for(worker, GUARD)


async def test_the_stream_exists_once_connected_and_health_reports_it() -> None:
    broker: NatsBroker = build("nats")
    nc = await nats.connect(broker.url)
    try:
        assert broker.epoch == ""
        await broker.connect()
        ack = await nc.jetstream().publish(f"{broker.stream}.ext.x", b"1")  # at once
        assert ack.seq == 1
        health = await broker.health()
        assert health == {
            "connected": True,
            "stream": broker.stream,
            "epoch": broker.epoch,
            "atomic_batch": broker.atomic_batch,
            "messages": 1,
        }
        assert len(health["epoch"]) == 8
    finally:
        await nc.close()
        await dispose(broker)


async def test_health_of_an_unreachable_server_is_reported_not_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = NatsBroker(f"nats://127.0.0.1:{port}", stream="nowhere", timeout=0.5)
    try:
        health = await asyncio.wait_for(broker.health(), GUARD)
        assert health["connected"] is False and health["stream"] == "nowhere"
        assert health["error"] and health["epoch"] == "" and health["messages"] == 0
    finally:
        await broker.close()

"""Other producers and consumers on the same NATS / Redis stream (docs/PROTOCOL.md).

The outside side is plain nats-py, redis-py and ``redis-cli``, never rxstreams code: a
CloudEvent published from outside reaches rxstreams subscribers as it was sent, anything
else becomes an ``io.rxstreams.external`` event or is skipped and counted, and what
rxstreams stored is readable by a plain JetStream consumer and by ``XRANGE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import Any

import aiohttp
import nats
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from adapters.brokers.positions import redis_offset
from adapters.server import create_app
from streams import Event, Position

from .conftest import Collector, build, dispose
from .services import require

pytestmark = pytest.mark.broker

GUARD = 20.0  # turns a hang into a failure; never a timed assertion
EXTERNAL = "io.rxstreams.external"
JSON = "application/json"
TEXT = "text/plain"
# orjson reads 1,024 levels of nesting but writes only 254: unreadable by the contract.
TOO_DEEP = b"[" * 300 + b"]" * 300


def cloudevent(**extra: Any) -> dict[str, Any]:
    """A CloudEvent as another service would write it, extension attribute included."""
    return {
        "specversion": "1.0",
        "id": "order-17-paid",
        "source": "https://billing.example.com",
        "type": "com.example.order.paid",
        "subject": "billing.order.paid",
        "time": "2026-01-02T03:04:05.250Z",
        "datacontenttype": "application/json",
        "region": "eu",
        "data": {"order": 17, "amount": 6},
        **extra,
    }


class Outside:
    """A producer that knows only the documented layout, talking through its own client."""

    source: str

    async def publish(self, subject: str, payload: bytes, msg_id: str | None = None) -> Position:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class NatsOutside(Outside):
    def __init__(self, nc: Any, stream: str, epoch: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.stream = stream
        self.epoch = epoch
        self.source = f"nats://{stream}"

    async def publish(self, subject: str, payload: bytes, msg_id: str | None = None) -> Position:
        headers = {"Nats-Msg-Id": msg_id} if msg_id is not None else None
        ack = await self.js.publish(
            f"{self.stream}.{subject}", payload, stream=self.stream, headers=headers
        )
        return Position(self.epoch, ack.seq)

    async def close(self) -> None:
        await self.nc.close()


class RedisOutside(Outside):
    def __init__(self, r: Any, stream: str, epoch: str) -> None:
        self.r = r
        self.key = f"rxstreams:{{{stream}}}:log"
        self.epoch = epoch
        self.source = f"redis://{stream}"

    async def add(self, fields: dict[str, str | bytes]) -> Position:
        entry_id = await self.r.xadd(self.key, fields)
        return Position(self.epoch, redis_offset(entry_id))

    async def publish(self, subject: str, payload: bytes, msg_id: str | None = None) -> Position:
        return await self.add({"s": subject, "e": payload})

    async def close(self) -> None:
        await self.r.aclose()


@pytest.fixture(params=["nats", "redis"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Outside]]:
    """An rxstreams broker on a fresh stream (created, epoch known) and an outside client."""
    kind = str(request.param)
    url = require(kind)
    broker = build(kind)
    try:
        await broker.connect()
        outside: Outside
        if kind == "nats":
            outside = NatsOutside(await nats.connect(url), broker.stream, broker.epoch)
        else:
            outside = RedisOutside(aioredis.Redis.from_url(url), broker.stream, broker.epoch)
        try:
            yield broker, outside
        finally:
            await outside.close()
    finally:
        await dispose(broker)


async def live_collector(
    broker: Any, pattern: str, marker_subject: str = "ext.marker"
) -> tuple[Collector, Position]:
    """A live subscription that has provably started: it received a marker published
    after it (so whatever is stored after the marker reaches it). Returns it and the
    marker's position."""
    sub = Collector(broker.subscribe(pattern))
    marker = await broker.apublish(marker_subject, {"marker": True})
    await sub.count(1)
    assert sub.events[0].sequence == str(marker)
    return sub, marker


def without_sequence(event: Event) -> dict[str, Any]:
    d = event.to_dict()
    d.pop("sequence", None)
    return d


def seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def check_cloudevent(raw: bytes) -> dict[str, Any]:
    """``raw`` is structured-mode CloudEvents 1.0 JSON: read by the official SDK when it is
    installed (its 2.x API, else 1.x), and checked field by field either way. Returns the
    JSON object."""
    sdk_read: Any = None
    try:
        from cloudevents.core.formats.json import JSONFormat

        sdk_read = partial(JSONFormat().read, None)
    except ImportError:
        with contextlib.suppress(ImportError):
            from cloudevents.http import from_json

            sdk_read = from_json
    obj: dict[str, Any] = orjson.loads(raw)
    if sdk_read is not None:
        sdk_read(raw)  # raises on a missing or malformed required attribute
    assert isinstance(obj, dict)
    assert obj["specversion"] == "1.0"
    for name in ("id", "source", "type"):
        assert isinstance(obj[name], str) and obj[name], name
    for name in ("subject", "time", "datacontenttype"):
        assert name not in obj or isinstance(obj[name], str), name
    if "time" in obj:
        seconds(obj["time"])  # RFC 3339
    known = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"}
    for name in set(obj) - known:
        assert name.isascii() and name.isalnum() and name.islower() and len(name) <= 20, name
    return obj


def skipped_metric(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("rxstreams_broker_entries_skipped_total"):
            return float(line.split()[-1])
    raise AssertionError("rxstreams_broker_entries_skipped_total is not in /metrics")


# -- outside producer -> rxstreams subscriber ---------------------------------------------
async def test_outside_cloudevent_reaches_live_and_resumed_subscribers_unchanged(
    pair: tuple[Any, Outside],
) -> None:
    broker, outside = pair
    live, marker = await live_collector(broker, "billing.>", "billing.marker")
    sent = cloudevent()
    paid_at = await outside.publish("billing.order.paid", orjson.dumps(sent), msg_id=sent["id"])
    # This one's JSON names another subject and a sequence: the broker's own win.
    forged = cloudevent(id="order-18-refunded", subject="elsewhere", sequence="forged-1")
    refunded_at = await outside.publish("billing.order.refunded", orjson.dumps(forged))

    await live.count(3)
    resumed = Collector(broker.subscribe("billing.>", since=marker))
    await resumed.count(2)
    for events in (live.events[1:], resumed.events):
        paid, refunded = events
        assert without_sequence(paid) == sent
        assert paid.sequence == str(paid_at)
        assert paid.extensions == {"region": "eu"}
        expected = {k: v for k, v in forged.items() if k != "sequence"}
        assert without_sequence(refunded) == {**expected, "subject": "billing.order.refunded"}
        assert refunded.sequence == str(refunded_at)
    assert live.error is None and resumed.error is None


async def test_foreign_messages_become_external_events(pair: tuple[Any, Outside]) -> None:
    broker, outside = pair
    live, marker = await live_collector(broker, "ext.>")
    before = time.time()
    # (position, subject, data, datacontenttype, id given by the producer)
    expected: list[tuple[Position, str, Any, str, str | None]] = [
        (
            await outside.publish("ext.plain", b'{"amount":6}'),
            "ext.plain",
            {"amount": 6},
            JSON,
            None,
        ),
        (await outside.publish("ext.text", "grüße".encode()), "ext.text", "grüße", TEXT, None),
        (await outside.publish("ext.scalar", b"6"), "ext.scalar", 6, JSON, None),
        (
            # Has specversion but is no valid CloudEvent: its JSON is the data.
            await outside.publish("ext.broken", b'{"specversion":"1.0","id":"x"}'),
            "ext.broken",
            {"specversion": "1.0", "id": "x"},
            JSON,
            None,
        ),
    ]
    if isinstance(outside, NatsOutside):
        pos = await outside.publish("ext.plain", b"[1,2]", msg_id="pay-6")
        expected.append((pos, "ext.plain", [1, 2], JSON, "pay-6"))
    if isinstance(outside, RedisOutside):
        pos = await outside.add({"s": "ext.fields", "amount": "6", "currency": "EUR"})
        expected.append((pos, "ext.fields", {"amount": "6", "currency": "EUR"}, JSON, None))
    after = time.time()

    await live.count(1 + len(expected))
    resumed = Collector(broker.subscribe("ext.>", since=marker))
    await resumed.count(len(expected))
    got = live.events[1:]
    for event, (pos, subject, data, content_type, msg_id) in zip(got, expected, strict=True):
        assert event.to_dict() == {
            "specversion": "1.0",
            "id": msg_id or f"{outside.source}/{pos}",
            "source": outside.source,
            "type": EXTERNAL,
            "subject": subject,
            "time": event.time,
            "datacontenttype": content_type,
            "sequence": str(pos),
            "data": data,
        }
        # The broker's time for the entry: the same machine's clock, so within this window.
        assert before - 1 <= seconds(event.time) <= after + 1
        if isinstance(outside, RedisOutside):  # the entry id's milliseconds
            assert seconds(event.time) == pytest.approx((pos.offset >> 20) / 1000, abs=1e-3)
    # Everything comes from the entry: a replay sees the very same events.
    assert [e.to_dict() for e in resumed.events] == [e.to_dict() for e in got]
    assert live.error is None and resumed.error is None


async def test_unreadable_entries_are_skipped_counted_and_the_subscription_goes_on(
    pair: tuple[Any, Outside],
) -> None:
    broker, outside = pair
    live, marker = await live_collector(broker, ">")
    junk = [
        await outside.publish("ext.junk", b"\xff\xfe not UTF-8"),
        await outside.publish("ext.bad!token", b'{"amount":6}'),  # a NATS subject, not ours
        await outside.publish("ext.deep", TOO_DEEP),
    ]
    if isinstance(outside, RedisOutside):
        junk.append(await outside.add({"e": b'{"amount":6}'}))  # no subject
        junk.append(await outside.add({"note": "neither s nor e"}))
    later = await outside.publish("ext.later", b'{"amount":7}')
    own = await broker.apublish("ext.own", {"amount": 8})

    await live.count(3)
    assert [e.sequence for e in live.events] == [str(marker), str(later), str(own)]
    assert live.events[1].data == {"amount": 7}
    assert live.error is None and not live.completed
    assert broker.skipped.count == len(junk)  # each entry once: one subscription read it

    # A resume from before the junk goes past it too, on any pattern (on Redis an entry
    # without a subject is read by every subscription).
    for pattern, events in ((">", [later, own]), ("ext.own", [own])):
        resumed = Collector(broker.subscribe(pattern, since=marker))
        await resumed.count(len(events))
        assert [e.sequence for e in resumed.events] == [str(p) for p in events]
        assert resumed.error is None and not resumed.completed
    assert broker.skipped.count >= len(junk)


async def test_a_redis_entry_id_without_a_position_does_not_end_the_subscription() -> None:
    """``XADD`` with an explicit id whose sequence part needs more than the 20 bits a
    position gives it: the entry cannot be placed, so it is skipped like other junk."""
    url = require("redis")
    broker = build("redis")
    r = aioredis.Redis.from_url(url)
    try:
        await broker.connect()
        outside = RedisOutside(r, broker.stream, broker.epoch)
        sub, marker = await live_collector(broker, ">")
        ms = redis_offset((await r.xinfo_stream(outside.key))["last-generated-id"]) >> 20
        await r.xadd(outside.key, {"s": "ext.wide", "e": b"1"}, id=f"{ms}-{1 << 20}")
        later = await r.xadd(outside.key, {"s": "ext.later", "e": b"2"}, id=f"{ms + 1}-0")
        await sub.count(2)
        assert sub.events[1].sequence == str(Position(marker.epoch, redis_offset(later)))
        assert sub.error is None and broker.skipped.count == 1
    finally:
        await r.aclose()
        await dispose(broker)


async def test_server_streams_past_foreign_entries_and_counts_the_skipped_ones(
    pair: tuple[Any, Outside],
) -> None:
    broker, outside = pair
    start = await broker.last_position()
    runner = web.AppRunner(create_app(broker), shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        await outside.publish("ext.junk", b"\xff")
        plain = await outside.publish("ext.plain", b'{"amount":6}')
        async with aiohttp.ClientSession() as session:
            ndjson = {"Accept": "application/x-ndjson"}
            query = {"last_event_id": str(start)}
            async with session.get(f"{base}/events/ext.>", params=query, headers=ndjson) as resp:
                assert resp.status == 200
                first = await next_ndjson(resp)
                assert (first["type"], first["sequence"]) == (EXTERNAL, str(plain))
                assert first["data"] == {"amount": 6}
                later = await outside.publish("ext.plain", b'{"amount":7}')
                second = await next_ndjson(resp)  # the same stream goes on
                assert (second["sequence"], second["data"]) == (str(later), {"amount": 7})
            query = {"after": str(start), "timeout": "10"}
            async with session.get(f"{base}/poll/ext.>", params=query) as resp:
                assert resp.status == 200, await resp.text()
                batch = await resp.json()
                assert batch, "long-poll answered [] although events follow the junk"
                assert [e["sequence"] for e in batch] == [str(plain), str(later)][: len(batch)]
            async with session.get(f"{base}/metrics") as resp:
                assert skipped_metric(await resp.text()) >= 1
    finally:
        await runner.cleanup()


async def next_ndjson(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next event line of an NDJSON stream (heartbeats skipped, notices refused)."""
    while True:
        line = await asyncio.wait_for(resp.content.readline(), GUARD)
        assert line, "the stream ended"
        if line.strip():
            value: dict[str, Any] = orjson.loads(line)
            assert "op" not in value, value
            return value


# -- rxstreams -> outside consumer --------------------------------------------------------
async def test_plain_jetstream_consumer_reads_what_rxstreams_stored() -> None:
    url = require("nats")
    broker = build("nats")
    nc = await nats.connect(url)
    try:
        event = Event.create({"text": "hi"}, type="chat.message")
        pos = await broker.apublish("chat.lobby.msg", event)
        raw_pos = await broker.apublish("sensor.t1", 21.5)
        js = nc.jetstream()
        sub = await js.subscribe(f"{broker.stream}.>", stream=broker.stream, ordered_consumer=True)
        msg, raw = [await sub.next_msg(timeout=GUARD) for _ in range(2)]

        assert msg.subject == f"{broker.stream}.chat.lobby.msg"
        assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == event.id
        assert msg.metadata.sequence.stream == pos.offset
        stored = check_cloudevent(msg.data)
        assert stored == {
            "specversion": "1.0",
            "id": event.id,
            "source": "rxstreams",
            "type": "chat.message",
            "time": event.time,
            "datacontenttype": "application/json",
            "data": {"text": "hi"},
        }  # neither subject nor sequence: those are the NATS subject and stream sequence

        assert raw.subject == f"{broker.stream}.sensor.t1"
        assert raw.metadata.sequence.stream == raw_pos.offset
        stored = check_cloudevent(raw.data)
        assert stored["data"] == 21.5 and stored["type"] == "rxstreams.event"
        assert "sequence" not in stored and "subject" not in stored
    finally:
        await nc.close()
        await dispose(broker)


async def test_an_outside_retry_with_the_same_nats_msg_id_is_stored_once() -> None:
    url = require("nats")
    broker = build("nats")
    try:
        await broker.connect()
        outside = NatsOutside(await nats.connect(url), broker.stream, broker.epoch)
        try:
            first = await outside.publish("ext.plain", b'{"amount":6}', msg_id="pay-6")
            again = await outside.js.publish(
                f"{broker.stream}.ext.plain",
                b'{"amount":6}',
                stream=broker.stream,
                headers={"Nats-Msg-Id": "pay-6"},
            )
            assert again.duplicate and again.seq == first.offset
            # rxstreams publishes with the event id as Nats-Msg-Id: an outside retry of the
            # same event within the window is dropped too.
            event = Event.create({"n": 1})
            pos = await broker.apublish("ext.own", event)
            again = await outside.js.publish(
                f"{broker.stream}.ext.own",
                event.encode(),
                stream=broker.stream,
                headers={"Nats-Msg-Id": event.id},
            )
            assert again.duplicate and again.seq == pos.offset
        finally:
            await outside.close()
    finally:
        await dispose(broker)


async def test_xrange_reads_what_rxstreams_stored() -> None:
    url = require("redis")
    broker = build("redis")
    r: Any = aioredis.Redis.from_url(url)  # replies are typed loosely
    try:
        event = Event.create({"text": "hi"}, type="chat.message")
        pos = await broker.apublish("chat.lobby.msg", event)
        raw_pos = await broker.apublish("sensor.t1", 21.5)
        entries = await r.xrange(f"rxstreams:{{{broker.stream}}}:log", "-", "+")
        assert [redis_offset(entry_id) for entry_id, _ in entries] == [pos.offset, raw_pos.offset]
        (_, fields), (_, raw) = entries
        assert fields == {b"s": b"chat.lobby.msg", b"e": event.encode()}
        check_cloudevent(fields[b"e"])
        assert set(raw) == {b"s", b"e"} and raw[b"s"] == b"sensor.t1"
        stored = check_cloudevent(raw[b"e"])
        assert stored["data"] == 21.5
        assert "sequence" not in stored and "subject" not in stored
        meta = await r.hgetall(f"rxstreams:{{{broker.stream}}}:meta")
        assert meta[b"epoch"].decode() == pos.epoch
    finally:
        await r.aclose()
        await dispose(broker)


# -- redis-cli ----------------------------------------------------------------------------
async def redis_cli(*args: str) -> list[str]:
    """Run ``redis-cli`` against the test server; its output lines (raw, not a TTY)."""
    proc = await asyncio.create_subprocess_exec(
        "redis-cli",
        "-u",
        require("redis"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), GUARD)
    assert proc.returncode == 0, err.decode()
    return out.decode().splitlines()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
async def test_redis_cli_writes_and_reads_the_stream() -> None:
    require("redis")
    broker = build("redis")
    try:
        start = await broker.last_position()
        sub = Collector(broker.subscribe("ext.>", since=start))
        key = f"rxstreams:{{{broker.stream}}}:log"
        [entry_id] = await redis_cli("XADD", key, "*", "s", "ext.plain", "e", '{"amount":6}')
        [event] = await sub.count(1)
        assert (event.type, event.subject, event.data) == (EXTERNAL, "ext.plain", {"amount": 6})
        assert event.sequence == str(Position(start.epoch, redis_offset(entry_id)))

        own = Event.create({"text": "hi"})
        pos = await broker.apublish("chat.lobby.msg", own)
        lines = await redis_cli("XRANGE", key, "-", "+")
        assert lines == [
            entry_id, "s", "ext.plain", "e", '{"amount":6}',
            str(pos.offset >> 20) + "-" + str(pos.offset & ((1 << 20) - 1)),
            "s", "chat.lobby.msg", "e", own.encode().decode(),
        ]  # fmt: skip
        assert sub.error is None
    finally:
        await dispose(broker)

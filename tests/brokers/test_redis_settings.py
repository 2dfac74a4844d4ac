"""RedisBroker never accepts a setting it ignores (issue 16, defect 5), creates its stream
at startup and reports its health; the live path's "deliver the XREAD reply as it is"
decision is checked against a model of trimming."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from adapters.brokers import BrokerURLError, RedisBroker, from_url, parse_broker_url
from adapters.brokers.redis_decisions import UnsupportedRetention, reply_is_complete
from streams import Position, Retention

from .conftest import Collector, build, dispose, unique_stream
from .services import require

HEALTH_KEYS = {"connected", "stream", "epoch", "atomic_batch", "messages"}


# -- retention: refused, never ignored ---------------------------------------------------
@pytest.mark.parametrize(
    ("retention", "named"),
    [
        (Retention(), "max_per_subject=1000"),
        (Retention(max_per_subject=None, max_bytes=1 << 20), "max_bytes=1048576"),
        (Retention(max_per_subject=5, max_bytes=10), "max_per_subject=5 and max_bytes=10"),
    ],
)
def test_unenforceable_retention_is_refused_at_construction(
    retention: Retention, named: str
) -> None:
    with pytest.raises(UnsupportedRetention, match=named) as info:
        RedisBroker("redis://127.0.0.1:6379/0", stream="x", retention=retention)
    assert isinstance(info.value, ValueError)
    assert "max_events" in str(info.value) and "max_age" in str(info.value)  # the alternative


def test_the_default_retention_is_one_redis_enforces() -> None:
    broker = RedisBroker("redis://127.0.0.1:6379/0")
    assert broker.retention.max_per_subject is None and broker.retention.max_bytes is None
    assert broker.retention.max_events == Retention().max_events
    ok = Retention(max_events=10, max_bytes=None, max_age=60, max_per_subject=None)
    assert RedisBroker(retention=ok).retention == ok


@pytest.mark.parametrize("option", ["max_per_subject=10", "max_bytes=4096"])
def test_a_redis_url_naming_an_unenforceable_limit_is_refused(option: str) -> None:
    with pytest.raises(BrokerURLError, match=option.replace("=", "=.*")) as info:
        parse_broker_url(f"redis://127.0.0.1:6379/0?{option}")
    assert "max_events" in str(info.value)


def test_redis_urls_without_those_limits_keep_working() -> None:
    plain = from_url("redis://127.0.0.1:6379/0")
    assert isinstance(plain, RedisBroker) and plain.retention.max_per_subject is None
    s = parse_broker_url("redis://h:1/0?max_per_subject=none&max_bytes=none&max_events=50")
    assert (s.retention.max_events, s.retention.max_per_subject) == (50, None)
    # Other brokers keep their defaults.
    assert parse_broker_url("nats://h:4222").retention.max_per_subject == 1000


async def test_rxstreams_serve_starts_on_a_plain_redis_url() -> None:
    from tests.integration.serving import Server

    url = f"{require('redis')}?stream={unique_stream()}"
    server = await Server.start(url)
    try:
        assert server.url.startswith("http://")
    finally:
        await server.stop()
        await dispose(build("redis", stream=url.rsplit("=", 1)[1]))


# -- startup and health --------------------------------------------------------------------
@pytest.mark.broker
async def test_connect_creates_the_stream_so_outside_producers_can_write() -> None:
    broker = build("redis")
    raw = aioredis.Redis.from_url(require("redis"))
    try:
        await broker.connect()
        assert broker.epoch and await raw.exists(broker.log_key) == 1
        assert (await raw.hget(broker.meta_key, "epoch")).decode() == broker.epoch
        start = await broker.last_position()
        sub = Collector(broker.subscribe("ext.>", since=start))
        await raw.xadd(broker.log_key, {"s": "ext.a", "e": b'{"n":1}'})
        assert [e.data for e in await sub.count(1)] == [{"n": 1}]
        assert broker.epoch == start.epoch  # the outside write did not start a new epoch
    finally:
        await raw.aclose()
        await dispose(broker)


@pytest.mark.broker
async def test_health_reports_the_stream() -> None:
    broker = build("redis")
    try:
        await broker.apublish_many("a.b", [1, 2, 3])
        health = await broker.health()
        assert set(health) == HEALTH_KEYS
        assert health == {
            "connected": True,
            "stream": broker.stream,
            "epoch": broker.epoch,
            "atomic_batch": True,
            "messages": 3,
        }
    finally:
        await dispose(broker)


async def test_health_of_an_unreachable_server_answers_without_raising() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0", stream=unique_stream())
    began = time.monotonic()
    try:
        health = await asyncio.wait_for(broker.health(), 10)
    finally:
        await broker.close()
    assert health["connected"] is False and health["error"]
    assert set(health) == HEALTH_KEYS | {"error"}
    assert time.monotonic() - began < 5


@pytest.mark.broker
async def test_a_new_epoch_differs_even_from_the_same_broker() -> None:
    """The epoch prefix is fixed per broker; the server clock keeps each new epoch new."""
    broker = build("redis")
    try:
        first = await broker.apublish("a.b", 1)
        sub = Collector(broker.subscribe(">", since=first))
        await broker.drop()
        second = await broker.apublish("a.b", 2)
        assert second.epoch != first.epoch
        assert "epoch changed" in str(await sub.failure())
    finally:
        await dispose(broker)


# -- the live path's decision, against a model ----------------------------------------------
@given(
    n=st.integers(0, 30),
    pos=st.integers(0, 30),
    before=st.integers(0, 30),
    after=st.integers(0, 30),
    count=st.integers(1, 10),
)
def test_a_reply_judged_complete_holds_every_entry_after_the_position(
    n: int, pos: int, before: int, after: int, count: int
) -> None:
    """Offsets 1..n were stored; retention removed the oldest ``before`` entries before
    the XREAD and ``after`` more (up to all) before the meta was read."""
    pos = min(pos, n)
    removed_before = min(before, n)
    removed_total = min(removed_before + after, n)
    reply = [o for o in range(removed_before + 1, n + 1) if o > pos][:count]
    complete = reply_is_complete(Position("e", pos), b"e", trimmed=removed_total)
    if complete:
        assert reply == list(range(pos + 1, n + 1))[:count]
    if removed_total <= pos:
        assert complete  # the common case never costs a second round trip
    assert not reply_is_complete(Position("e", pos), b"other", trimmed=0)


@pytest.mark.broker
async def test_publishers_beyond_the_connection_cap_wait_instead_of_failing() -> None:
    broker = build("redis", max_connections=4)
    try:
        sub = Collector(broker.subscribe("a.>", since=await broker.last_position()))
        positions = await asyncio.gather(*(broker.apublish("a.b", i) for i in range(500)))
        assert len(set(positions)) == 500
        assert sorted(e.data for e in await sub.count(500)) == list(range(500))
    finally:
        await dispose(broker)


@pytest.mark.broker
async def test_subscribers_beyond_the_connection_cap_wait_their_turn() -> None:
    """More live subscribers than connections: each gets the events, none fails."""
    broker = build("redis", max_connections=2, block=0.05)
    try:
        start = await broker.last_position()
        subs = [Collector(broker.subscribe("a.>", since=start)) for _ in range(6)]
        await broker.apublish_many("a.b", [1, 2, 3])
        for sub in subs:
            assert [e.data for e in await sub.count(3)] == [1, 2, 3]
            assert sub.error is None
    finally:
        await dispose(broker)

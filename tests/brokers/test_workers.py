"""Competing consumers on the real NATS and Redis servers: in-process members sharing a
group, and three worker processes sharing 10,000 events while one is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from reactivex import operators as ops

from adapters.brokers import BrokerURLError
from adapters.brokers.worker import run_worker
from streams import Event

from .conftest import build, dispose, unique_stream
from .pipelines import read_records
from .services import require

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["nats", "redis"])
def net(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


async def publish_many(broker: Any, items: list[tuple[str, Event]], chunk: int = 200) -> None:
    for i in range(0, len(items), chunk):
        await asyncio.gather(*(broker.apublish(s, e) for s, e in items[i : i + chunk]))


async def wait_for_ids(seen: Any, expected: set[str], guard: float = 30) -> None:
    async def poll() -> None:
        while not expected <= set(seen()):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), guard)


@pytest.mark.parametrize("style", ["observable", "async"])
async def test_members_of_a_group_share_the_events(net: str, style: str) -> None:
    broker = build(net)
    try:
        jobs = [("jobs.resize", Event.create(i)) for i in range(300)]
        noise = [("other.thing", Event.create(-1)) for _ in range(20)]
        await publish_many(broker, jobs[:150] + noise + jobs[150:])
        done: list[tuple[int, str]] = []

        def pipeline_for(member: int) -> Any:
            if style == "async":

                async def handle(event: Event) -> None:
                    done.append((member, event.id))

                return handle

            def note(event: Event) -> None:
                done.append((member, event.id))

            return lambda obs: obs.pipe(ops.do_action(note))

        stop = asyncio.Event()
        members = [
            asyncio.create_task(run_worker(broker, pipeline_for(m), "g1", "jobs.>", stop))
            for m in range(2)
        ]
        await wait_for_ids(lambda: [i for _, i in done], {e.id for _, e in jobs})
        stop.set()
        await asyncio.wait_for(asyncio.gather(*members), 10)
        ids = Counter(i for _, i in done)
        assert set(ids) == {e.id for _, e in jobs}  # the pattern kept the noise out
        assert max(ids.values()) == 1  # nobody crashed: nothing was processed twice
    finally:
        await dispose(broker)


async def test_the_memory_broker_has_no_workers() -> None:
    async def handle(event: Event) -> None: ...

    with pytest.raises(BrokerURLError, match="nats://"):
        await run_worker("memory://", handle)


def _spawn(url: str, record_dir: str, delay: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RX_RECORD_DIR": record_dir, "RX_DELAY": delay}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "adapters.brokers.worker", "tests.brokers.pipelines:record"]
    cmd += ["--broker", url, "--group", "crunchers", "--pattern", "work.>"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)


async def test_three_workers_one_killed_every_event_processed(
    net: str, record_property: Any
) -> None:
    stream = unique_stream()
    url = f"{require(net)}?stream={stream}&ack_wait=2"
    broker = build(net, stream=stream)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        events = [Event.create(i) for i in range(10_000)]
        await publish_many(broker, [(f"work.q{i % 7}", e) for i, e in enumerate(events)])
        expected = {e.id for e in events}
        with tempfile.TemporaryDirectory() as record_dir:
            procs = [_spawn(url, record_dir, "0.0003") for _ in range(3)]

            def victim_lines() -> int:
                path = Path(record_dir, f"worker-{procs[0].pid}.log")
                return path.read_text().count("\n") if path.exists() else 0

            async def victim_busy() -> None:
                while victim_lines() < 500:
                    assert procs[0].poll() is None, procs[0].stderr.read()  # type: ignore[union-attr]
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(victim_busy(), 30)
            os.kill(procs[0].pid, signal.SIGKILL)
            killed_after = victim_lines()
            procs[0].wait()
            await wait_for_ids(lambda: read_records(record_dir), expected, guard=40)
            counts = Counter(read_records(record_dir))
        duplicates = sum(counts.values()) - len(counts)
        record_property("duplicates", duplicates)
        print(
            f"\n{net}: 10000 events, 3 workers, one SIGKILLed after {killed_after} events: "
            f"{len(counts)} processed, {duplicates} duplicates"
        )
        assert set(counts) == expected
        for p in procs[1:]:
            assert p.poll() is None, "surviving workers keep running"
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        await dispose(broker)

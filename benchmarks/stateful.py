"""Keyed worker groups (issue 10) on the real NATS and Redis servers: one JSON line.

The keyed pipeline of the stateful-worker tests, on the library's operators (``dedupe`` by
message id, ``group_by_key`` per (room, user) with an event-time ``rate_limit`` of 5 at once
then one per 5 s, a ``tumbling`` count per room in 10 s event-time windows with 5 s of
lateness on per-room watermarks; keyed by room, 8 partitions) over ``BENCH_EVENTS`` chat
events (default 10,000; 5% duplicates, 3% stragglers). Per broker:

- ``events_per_s``: with 1, 2 and 4 ``rxstreams worker`` processes (realistic case first: one
  process). The members start on an empty stream and own every partition before the clock
  starts; then the events are published (batches of 500) and the clock stops when the last
  expected output arrived: routing, partition pipelines, checkpoints and output publishing,
  end to end.
- ``checkpoint_overhead``: one in-process member over twice as many events, already stored,
  throughput with checkpoints off (``checkpoint_every=0``: nothing is committed until the
  end) divided by throughput at the default interval (1,000 events or 1 s, and 0.2 s when
  a partition's input runs dry), the median of ``BENCH_ROUNDS`` interleaved rounds
  (default 5). Measured on inputs processed (the partitions' positions), since without
  checkpoints there are no outputs: the checkpointed side also publishes every output,
  which the other side never does, so the ratio is an upper bound.
- ``recovery_s``: two worker processes under a paced input (1,000 events/s), one SIGKILLed:
  seconds from the kill to the first output of a partition it owned (lease ``BENCH_LEASE``,
  default 2 s; target: lease + 2 s).
- ``oracle_match``: every run above gave exactly the outputs of one subscription running
  the pipeline over the same input, after dropping repeats by output id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.brokers import NatsBroker, RedisBroker  # noqa: E402
from adapters.brokers.partitions import units  # noqa: E402
from adapters.brokers.stateful_worker import Member, run_keyed_worker, state_store  # noqa: E402
from streams import Event, Position, Retention  # noqa: E402
from tests.integration.stateful_pipelines import (  # noqa: E402
    canonical,
    make_inputs,
    oracle,
    pipeline,
)

EVENTS = int(os.environ.get("BENCH_EVENTS", "10000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
LEASE = float(os.environ.get("BENCH_LEASE", "2"))
PARTITIONS = 8
GROUP = "bench"
URLS = {
    "nats": os.environ.get("RXSTREAMS_NATS_URL", "nats://127.0.0.1:4222"),
    "redis": os.environ.get("RXSTREAMS_REDIS_URL", "redis://127.0.0.1:6379/0"),
}
UNBOUNDED = Retention(max_events=None, max_bytes=None, max_age=None, max_per_subject=None)


class Run:
    """One fresh stream, its worker processes and the outputs seen on it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.stream = f"rxbench-{uuid.uuid4().hex[:10]}"
        cls = NatsBroker if kind == "nats" else RedisBroker
        self.broker: Any = cls(URLS[kind], stream=self.stream, retention=UNBOUNDED)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.outputs: dict[str, tuple[bytes, float]] = {}
        self._watch: Any = None

    async def start(self) -> Run:
        await self.broker.connect()
        start = Position((await self.broker.last_position()).epoch, 0)
        self._watch = self.broker.subscribe("out.>", since=start).subscribe(self._note)
        return self

    def _note(self, event: Event) -> None:
        self.outputs.setdefault(event.id, (canonical(event.data), time.perf_counter()))

    def spawn(self, checkpoint_every: int = 1000) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "adapters.brokers.worker"]
        cmd += ["tests.integration.stateful_pipelines:pipeline"]
        cmd += ["--broker", f"{URLS[self.kind]}?stream={self.stream}", "--group", GROUP]
        cmd += ["--pattern", "in.>", "--key", "data.room", "--partitions", str(PARTITIONS)]
        cmd += ["--to", "out.windows", "--checkpoint-every", str(checkpoint_every)]
        cmd += ["--lease", str(LEASE)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    async def owners(self) -> dict[str, str]:
        store = state_store(self.broker, GROUP)
        try:
            return await store.owners(units(PARTITIONS))
        finally:
            await store.close()

    async def balanced(self, members: int, guard: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + guard
        while True:
            owners = await self.owners()
            if len(owners) == PARTITIONS + 1 and len(set(owners.values())) == members:
                return owners
            if time.monotonic() > deadline:
                raise TimeoutError(f"{members} members never shared the units: {owners}")
            await asyncio.sleep(0.1)

    async def until_outputs(self, n: int, guard: float = 120) -> None:
        deadline = time.monotonic() + guard
        while len(self.outputs) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.outputs)} of {n} outputs")
            await asyncio.sleep(0.02)

    def matches(self, want: Counter[bytes]) -> bool:
        return Counter(c for c, _ in self.outputs.values()) == want

    async def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.to_thread(p.wait, 15)
            except subprocess.TimeoutExpired:
                p.kill()
        if self._watch is not None:
            self._watch.dispose()
        store = state_store(self.broker, GROUP)
        with contextlib.suppress(Exception):
            await store.drop()
        with contextlib.suppress(Exception):
            await self.broker.drop()
        await self.broker.close()


async def publish(broker: Any, records: list[dict[str, Any]]) -> None:
    for i in range(0, len(records), 500):
        await broker.apublish_many("in.msg", [Event.create(d) for d in records[i : i + 500]])


async def throughput(kind: str, workers: int, records: list[dict[str, Any]]) -> tuple[float, bool]:
    want = oracle(records)
    run = await Run(kind).start()
    try:
        for _ in range(workers):
            run.spawn()
        await run.balanced(workers)
        t0 = time.perf_counter()
        await publish(run.broker, records)
        await run.until_outputs(sum(want.values()))
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        return len(records) / elapsed, run.matches(want)
    finally:
        await run.close()


async def processed_per_s(kind: str, records: list[dict[str, Any]], every: int) -> float:
    """One in-process member over stored events: inputs processed per second."""
    run = await Run(kind).start()
    try:
        await publish(run.broker, records)
        members: list[Member] = []
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_keyed_worker(
                run.broker, pipeline, GROUP, "in.>", "data.room", PARTITIONS, "out.windows",
                checkpoint_every=every, lease=LEASE, stop=stop, on_member=members.append,
            )
        )  # fmt: skip
        t0 = time.perf_counter()
        while True:
            status = members[0].status() if members else {}
            done = sum(s.events for u, s in status.items() if u != "router")
            if done >= len(records):
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
        return len(records) / elapsed
    finally:
        await run.close()


async def recovery(kind: str) -> tuple[float, bool]:
    records = make_inputs(max(EVENTS, 8000), seed=11)
    run = await Run(kind).start()
    try:
        victim, _ = run.spawn(), run.spawn()
        await run.balanced(2)
        sent = 0

        async def paced() -> None:  # 1,000 events/s in batches of 50
            nonlocal sent
            while sent < len(records):
                batch = records[sent : sent + 50]
                await run.broker.apublish_many("in.msg", [Event.create(d) for d in batch])
                sent += len(batch)
                await asyncio.sleep(0.05)

        feeder = asyncio.create_task(paced())
        await run.until_outputs(50)
        owners = await run.owners()
        lost = {u for u, m in owners.items() if f"-{victim.pid}-" in m}
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.perf_counter()

        def first_after() -> float | None:
            times = [
                t
                for out_id, (_, t) in run.outputs.items()
                if out_id.split(":")[1] in lost and t > killed + 0.05
            ]
            return min(times) - killed if times else None

        deadline = time.monotonic() + 60
        while first_after() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no output from the taken-over partitions")
            await asyncio.sleep(0.01)
        recovered = first_after()
        await feeder
        want = oracle(records)
        await run.until_outputs(sum(want.values()))
        await asyncio.sleep(0.5)
        assert recovered is not None
        return recovered, run.matches(want)
    finally:
        await run.close()


async def measure(kind: str) -> dict[str, Any]:
    records = make_inputs(EVENTS)
    rates: dict[str, float] = {}
    matched = True
    for workers in (1, 2, 4):
        rate, ok = await throughput(kind, workers, records)
        rates[str(workers)] = round(rate)
        matched = matched and ok
    plain: list[float] = []
    checked: list[float] = []
    longer = make_inputs(2 * EVENTS, seed=3)  # a run of a few seconds: less noise
    for _ in range(ROUNDS):
        plain.append(await processed_per_s(kind, longer, 0))
        checked.append(await processed_per_s(kind, longer, 1000))
    recovered, ok = await recovery(kind)
    return {
        "events_per_s": rates,
        "checkpoint_overhead": round(statistics.median(plain) / statistics.median(checked), 3),
        "processed_per_s": {
            "no_checkpoints": round(statistics.median(plain)),
            "default_checkpoints": round(statistics.median(checked)),
        },
        "recovery_s": round(recovered, 2),
        "oracle_match": matched and ok,
    }


async def main() -> None:
    line: dict[str, Any] = {
        "benchmark": "stateful",
        "events": EVENTS,
        "partitions": PARTITIONS,
        "lease_s": LEASE,
        "cpus": os.cpu_count(),
    }
    for kind in ("nats", "redis"):
        try:
            line[kind] = await measure(kind)
        except OSError as exc:  # no server there
            line[kind] = {"error": f"{type(exc).__name__}: {exc}"}
    print(orjson.dumps(line).decode())


if __name__ == "__main__":
    asyncio.run(main())

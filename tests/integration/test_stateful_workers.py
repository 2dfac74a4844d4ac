"""Keyed worker groups on the real NATS and Redis servers, with real worker processes.

- oracle: the keyed pipeline (the library's ``dedupe``, ``group_by_key`` with an event-time
  ``rate_limit`` per sender, ``tumbling`` per room on per-key watermarks; see
  :mod:`tests.integration.stateful_pipelines`) over out-of-order events with duplicates,
  run by worker processes (one SIGKILLed mid-stream, one joining later) gives exactly the
  outputs of one subscription running it over the same input, after dropping repeats by
  output id;
- zombie: a member SIGSTOPped past its lease, its partitions taken over, then SIGCONTed,
  gets no output (so no commit) accepted;
- rebalance: three members, one leaves cleanly, one joins: every unit has one owner at every
  sampled instant, and the committed checkpoints count every input exactly once.

The default run uses 1,500 events and two workers; ``RX_STATEFUL_FULL=1`` (or
``HYPOTHESIS_PROFILE=thorough``) runs the issue's 20,000 events with 1, 2 and 4 workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.brokers import NatsBroker, RedisBroker
from adapters.brokers.partitions import units
from adapters.brokers.stateful_worker import run_keyed_worker, state_store
from adapters.brokers.worker import run_worker
from streams import Event, Position, Retention
from tests.brokers.services import require
from tests.integration.stateful_pipelines import canonical, make_inputs, oracle, pipeline

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]
FULL = bool(os.environ.get("RX_STATEFUL_FULL")) or os.environ.get("HYPOTHESIS_PROFILE") == (
    "thorough"
)
EVENTS = 20_000 if FULL else 1_500
PARTITIONS = 8 if FULL else 4
LEASE = 1.0
GROUP = "rooms"
UNBOUNDED = Retention(max_events=None, max_bytes=None, max_age=None, max_per_subject=None)


@pytest.fixture(params=["nats", "redis"])
def net(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


@dataclass
class Group:
    """A stream, the worker processes of one keyed group on it, and its outputs."""

    kind: str
    stream: str
    broker: Any
    logs: str
    target: str = "tests.integration.stateful_pipelines:pipeline"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    outputs: dict[str, tuple[bytes, Position]] = field(default_factory=dict)
    repeats: int = 0

    @property
    def url(self) -> str:
        return f"{require(self.kind)}?stream={self.stream}"

    def spawn(self, delay: float = 0.0) -> subprocess.Popen[bytes]:
        env = {**os.environ, "RX_DELAY": str(delay)}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "adapters.brokers.worker", self.target]
        cmd += ["--broker", self.url, "--group", GROUP, "--pattern", "in.>"]
        cmd += ["--key", "data.room", "--partitions", str(PARTITIONS), "--to", "out.windows"]
        cmd += ["--checkpoint-every", "200", "--lease", str(LEASE)]
        log = open(Path(self.logs, f"worker-{len(self.procs)}.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def note(self, event: Event) -> None:
        seen = self.outputs.get(event.id)
        content = canonical(event.data)
        if seen is not None:
            self.repeats += 1
            assert seen[0] == content, f"output {event.id} came back different"
            return
        self.outputs[event.id] = (content, Position.parse(event.sequence or ""))

    def contents(self, *drop: str) -> Counter[bytes]:
        def strip(raw: bytes) -> bytes:
            value = orjson.loads(raw)
            for name in drop:
                value.pop(name, None)
            return canonical(value)

        return Counter(strip(c) if drop else c for c, _ in self.outputs.values())

    async def until(self, done: Callable[[], bool], guard: float, what: str) -> None:
        deadline = time.monotonic() + guard
        while not done():
            for p in self.procs:
                if p.poll() not in (None, -signal.SIGKILL, 0):
                    pytest.fail(f"worker exited with {p.returncode}: {self.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}: {self.log_text()[-3000:]}")
            await asyncio.sleep(0.05)

    def log_text(self) -> str:
        return "\n".join(p.read_text() for p in sorted(Path(self.logs).glob("*.log")))

    async def owners(self) -> dict[str, str]:
        store = state_store(self.broker, GROUP)
        try:
            return await store.owners(units(PARTITIONS))
        finally:
            await store.close()

    async def committed(self) -> int:
        """Inputs counted by the partitions' committed checkpoints."""
        store = state_store(self.broker, GROUP)
        try:
            checkpoints = [await store.checkpoint(u) for u in units(PARTITIONS)[1:]]
        finally:
            await store.close()
        return sum(c.events for c in checkpoints if c is not None)

    async def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.to_thread(p.wait, 15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
async def group(net: str) -> AsyncIterator[Group]:
    cls = NatsBroker if net == "nats" else RedisBroker
    stream = f"rxtest-{os.urandom(6).hex()}"
    broker = await cls(require(net), stream=stream, retention=UNBOUNDED).connect()
    with tempfile.TemporaryDirectory() as logs:
        g = Group(net, stream, broker, logs)
        start = Position((await broker.last_position()).epoch, 0)
        watch = broker.subscribe("out.>", since=start).subscribe(g.note)
        try:
            yield g
        finally:
            watch.dispose()
            await g.stop()
            store = state_store(broker, GROUP)
            await asyncio.wait_for(store.drop(), 10)
            await broker.drop()
            await broker.close()


async def publish(broker: Any, records: list[dict[str, Any]]) -> None:
    for i in range(0, len(records), 500):
        await broker.apublish_many("in.msg", [Event.create(d) for d in records[i : i + 500]])


@pytest.mark.parametrize("workers", [1, 2, 4] if FULL else [2])
async def test_workers_killed_and_joining_give_the_single_process_outputs(
    group: Group, workers: int
) -> None:
    records = make_inputs(EVENTS)
    want = oracle(records)
    expected = sum(want.values())
    await publish(group.broker, records)
    delay = 2.0 / EVENTS  # about two seconds of work in all: the kill lands mid-stream
    for _ in range(workers):
        group.spawn(delay)
    await group.until(lambda: len(group.outputs) >= expected // 5, 60, "first outputs")
    os.kill(group.procs[0].pid, signal.SIGKILL)
    killed_at = len(group.outputs)
    group.spawn(delay)  # one joins later
    await group.until(lambda: len(group.outputs) >= expected, 90, "every output")
    await asyncio.sleep(0.5)  # anything extra would show up now
    print(
        f"\n{group.kind}: {EVENTS} events, {workers} workers, one SIGKILLed after "
        f"{killed_at} of {expected} outputs, one joined: {group.repeats} repeats dropped by id"
    )
    assert group.contents() == want


async def test_a_zombie_member_commits_nothing(group: Group) -> None:
    group.target = "tests.integration.stateful_pipelines:tagged"
    records = make_inputs(EVENTS)
    await publish(group.broker, records[: EVENTS // 2])
    zombie = group.spawn(4.0 / EVENTS)
    group.spawn(4.0 / EVENTS)  # the survivor
    tag = f"-{zombie.pid}-"
    await group.until(lambda: len(group.outputs) > 20, 60, "the first outputs")

    async def split() -> bool:
        owners = await group.owners()
        mine = [u for u, m in owners.items() if tag in m]
        return len(owners) == PARTITIONS + 1 and 0 < len(mine) < len(owners)

    deadline = time.monotonic() + 30
    while not await split():
        assert time.monotonic() < deadline, group.log_text()
        await asyncio.sleep(0.1)
    os.kill(zombie.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()

    async def taken_over() -> bool:
        owners = await group.owners()
        return len(owners) == PARTITIONS + 1 and not any(tag in m for m in owners.values())

    while not await taken_over():
        assert time.monotonic() - stopped_at < 20, group.log_text()
        await asyncio.sleep(0.1)
    await publish(group.broker, records[EVENTS // 2 :])
    resumed = await group.broker.last_position()
    woken = time.time()
    os.kill(zombie.pid, signal.SIGCONT)
    want = oracle(records)
    await group.until(lambda: len(group.outputs) >= sum(want.values()), 90, "every output")
    await asyncio.sleep(1.5 * LEASE)  # the zombie has woken up and tried whatever it would
    # Woken, the zombie rejoins and may own partitions again under new leases (a pipeline
    # built after SIGCONT); nothing from a pipeline built under its old leases may land.
    after = [orjson.loads(c) for c, pos in group.outputs.values() if pos.offset > resumed.offset]
    stale = [o for o in after if o["pid"] == zombie.pid and o["built"] < woken]
    assert stale == [], f"{len(stale)} outputs of the zombie's stale pipelines accepted"
    assert group.contents("pid", "built") == want
    assert "claimed by another member" in group.log_text() or "lost" in group.log_text()


async def test_members_leaving_and_joining_keep_one_owner_per_unit(group: Group) -> None:
    records = make_inputs(EVENTS)
    want = oracle(records)
    await publish(group.broker, records)
    members = [group.spawn(3.0 / EVENTS) for _ in range(3)]
    samples: list[dict[str, str]] = []
    sampling = True

    async def sample() -> None:
        while sampling:
            samples.append(await group.owners())
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        gone = f"-{members[0].pid}-"

        def sharing() -> bool:  # all three own units (rendezvous gives each a share)
            last = samples[-1] if samples else {}
            return len(set(last.values())) == 3 and gone in "".join(last.values())

        await group.until(sharing, 30, "three members sharing the units")
        await group.until(lambda: len(group.outputs) >= sum(want.values()) // 4, 60, "outputs")
        members[0].send_signal(signal.SIGTERM)  # leaves cleanly
        await asyncio.to_thread(members[0].wait, 15)
        assert members[0].returncode == 0, group.log_text()
        exited_at = len(samples)
        group.spawn(3.0 / EVENTS)
        await group.until(lambda: len(group.outputs) >= sum(want.values()), 90, "outputs")
        live = {f"-{p.pid}-" for p in group.procs if p.poll() is None}

        def settled() -> bool:  # every unit owned by a live member
            last = samples[-1] if samples else {}
            owned = set(last) == set(units(PARTITIONS))
            return owned and all(any(t in m for t in live) for m in last.values())

        await group.until(settled, 5 * LEASE, "every unit owned by a live member")
        # Inputs that produce no output (repeats) may still be in flight when the last
        # output arrives: stop only once every partition has committed what was routed.
        deadline = time.monotonic() + 5 * LEASE
        while await group.committed() < EVENTS and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        sampling = False
        await sampler
    assert group.contents() == want
    gone = f"-{members[0].pid}-"
    for owners in samples:  # one owner per unit at every instant
        assert len(owners) <= PARTITIONS + 1
    assert any(gone in "".join(o.values()) for o in samples[:exited_at])
    for owners in samples[exited_at:]:  # a member that left released every lease on its way
        assert gone not in "".join(owners.values())
    # Every input counted exactly once in the committed lineage of its partition.
    await group.stop()
    store = state_store(group.broker, GROUP)
    try:
        checkpoints = [await store.checkpoint(u) for u in units(PARTITIONS)[1:]]
        router = await store.checkpoint("router")
    finally:
        await store.close()
    assert router is not None and router.events == EVENTS
    assert sum(c.events for c in checkpoints if c is not None) == EVENTS


async def test_events_without_a_key_are_dead_letters_and_the_partition_goes_on(
    group: Group,
) -> None:
    records = make_inputs(600)
    bad = [{"user": "u1", "msg": f"nokey{i}", "ts": 1.0} for i in range(5)]
    bad.append({"room": {"not": "hashable"}, "msg": "dict", "ts": 1.0})
    mixed = records[:300] + bad + records[300:]
    await publish(group.broker, mixed)
    dead: list[Event] = []
    start = Position((await group.broker.last_position()).epoch, 0)
    watch = group.broker.subscribe(f"rxdead.{GROUP}", since=start).subscribe(dead.append)
    stop = asyncio.Event()
    member = asyncio.create_task(
        run_keyed_worker(
            group.broker, pipeline, GROUP, "in.>", "data.room", PARTITIONS, "out.windows",
            lease=LEASE, stop=stop,
        )
    )  # fmt: skip
    try:
        want = oracle(records)
        await group.until(lambda: len(group.outputs) >= sum(want.values()), 30, "outputs")
        await group.until(lambda: len(dead) >= len(bad), 10, "dead letters")
    finally:
        stop.set()
        await asyncio.wait_for(member, 10)
        watch.dispose()
    assert group.contents() == want
    assert sorted(d.data["event"]["data"]["msg"] for d in dead) == sorted(b["msg"] for b in bad)
    assert all("KeyMissing" in d.data["error"] for d in dead)


async def test_a_keyed_worker_needs_a_key_and_partitions() -> None:
    with pytest.raises(ValueError, match="--key and --partitions"):
        await run_worker("nats://127.0.0.1:4222", pipeline, partitions=4)

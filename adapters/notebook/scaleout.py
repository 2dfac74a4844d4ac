"""The plumbing of ``notebooks/04_scale_out.ipynb``, so the notebook can tell its story.

- :func:`brokers_here`: which of NATS and Redis answer on this machine (and, when none
  does, what to start);
- :func:`two_servers`: two rxstreams servers, each with its own connection to one fresh
  stream of a broker, as two processes on two machines would have;
- :func:`worker_group`: workers competing in one consumer group, recording who handled
  what;
- :func:`until_live`: probe until a live view has seen its first event;
- :func:`keyed_workers`: a keyed worker group of ``rxstreams worker`` processes running a
  stateful pipeline (:func:`batches_per_room`), one of which can be killed, and the graph
  of its partitions (owner, checkpoint position, state size) read from the broker.

Every stream is fresh (``?stream=nb04-...``) and dropped afterwards, so runs never see
each other's events.

>>> fresh("redis://127.0.0.1:6379/0", "nb04-x")
'redis://127.0.0.1:6379/0?stream=nb04-x'
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "START_HINT",
    "KeyedWorkers",
    "WorkerGroup",
    "batches_per_room",
    "brokers_here",
    "fresh",
    "keyed_workers",
    "two_servers",
    "until_live",
    "worker_group",
]

START_HINT = (
    "No broker answers on 127.0.0.1, so the rest of this notebook does nothing.\n"
    "Start one (or both) and run it again:\n\n"
    "  nats-server -js -a 127.0.0.1 -p 4222      # or: docker run -p 4222:4222 nats:2.10 -js\n"
    "  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
    "      # or: docker run -p 6379:6379 redis:7\n\n"
    "(other addresses: set RXSTREAMS_NATS_URL / RXSTREAMS_REDIS_URL)"
)


def fresh(url: str, name: str | None = None) -> str:
    """``url`` with a stream of its own (``name``, else a new ``nb04-<hex>``).

    >>> fresh("nats://127.0.0.1:4222?x=1", "s")
    'nats://127.0.0.1:4222?x=1&stream=s'
    """
    name = name or f"nb04-{uuid.uuid4().hex[:10]}"
    return f"{url}{'&' if '?' in url else '?'}stream={name}"


async def _answers(url: str, send: bytes, expect: bytes, timeout: float = 1.0) -> bool:
    """Whether the server at ``url`` answers its protocol greeting within ``timeout``."""
    netloc = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    host, _, port = netloc.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, TimeoutError, ValueError):
        return False
    try:
        writer.write(send)
        return (await asyncio.wait_for(reader.read(64), timeout)).startswith(expect)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def brokers_here(
    nats_url: str | None = None, redis_url: str | None = None, *, say: Any = print
) -> list[str]:
    """The broker URLs that answer (NATS first), from the arguments, else
    ``$RXSTREAMS_NATS_URL`` / ``$RXSTREAMS_REDIS_URL``, else the default ports on
    127.0.0.1. With none, ``say`` what to start.

    >>> asyncio.run(brokers_here("nats://127.0.0.1:9", "redis://127.0.0.1:9/0", say=None))
    []
    """
    nats = nats_url or os.environ.get("RXSTREAMS_NATS_URL", "nats://127.0.0.1:4222")
    redis = redis_url or os.environ.get("RXSTREAMS_REDIS_URL", "redis://127.0.0.1:6379/0")
    probes = [(nats, b"", b"INFO "), (redis, b"PING\r\n", b"+PONG")]
    answering = await asyncio.gather(*(_answers(*p) for p in probes))
    found = [url for (url, _, _), ok in zip(probes, answering, strict=True) if ok]
    if not found and say is not None:
        say(START_HINT)
    return found


async def _serve(broker: Any) -> tuple[web.AppRunner, str]:
    from adapters.server import create_app

    runner = web.AppRunner(create_app(broker))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@contextlib.asynccontextmanager
async def two_servers(url: str) -> AsyncIterator[tuple[str, str]]:
    """Servers A and B (their base URLs) on one fresh stream of the broker at ``url``,
    each with its own broker connection; everything is closed and the stream dropped on
    exit."""
    from adapters.brokers import from_url

    stream = fresh(url)
    brokers: list[Any] = [from_url(stream), from_url(stream)]
    runners: list[web.AppRunner] = []
    try:
        bases = []
        for broker in brokers:
            runner, base = await _serve(broker)
            runners.append(runner)
            bases.append(base)
        yield bases[0], bases[1]
    finally:
        for runner in runners:
            await runner.cleanup()
        await brokers[0].drop()
        for broker in brokers:
            await broker.close()


async def until_live(view: Any, probe: Callable[[], Awaitable[Any]], every: float = 1.0) -> int:
    """Call ``probe()`` until ``view`` (a live view of a live subscription) has seen an
    event: before the subscription is live, what is published may pass it by. Returns how
    many probes it took."""
    probes = 0
    while view.count == 0:
        await probe()
        probes += 1
        with contextlib.suppress(TimeoutError):
            await view.until(1, timeout=every)
    return probes


@dataclass
class WorkerGroup:
    """Workers of one consumer group: ``done[i]`` lists the ``data[key]`` of what worker
    ``i`` handled; :meth:`publish` adds a job, :meth:`until` waits for ``n`` handled."""

    brokers: list[Any]
    key: str = "n"
    done: dict[int, list[Any]] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def handler(self, worker: int) -> Callable[[Any], Awaitable[None]]:
        self.done[worker] = []

        async def handle(event: Any) -> None:
            self.done[worker].append(event.data[self.key])
            self._changed.set()

        return handle

    @property
    def handled(self) -> int:
        return sum(map(len, self.done.values()))

    async def publish(self, subject: str, data: Any) -> None:
        await self.brokers[0].apublish(subject, data)

    async def until(self, n: int, timeout: float = 20.0) -> None:
        async def wait() -> None:
            while self.handled < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


@contextlib.asynccontextmanager
async def worker_group(
    url: str, *, group: str, pattern: str, workers: int = 2, key: str = "n"
) -> AsyncIterator[WorkerGroup]:
    """``workers`` workers (``run_worker``, each with its own broker connection) in
    ``group`` consuming ``pattern`` from a fresh stream of the broker at ``url``; stopped,
    closed and the stream dropped on exit."""
    from adapters.brokers import from_url
    from adapters.brokers.worker import run_worker

    stream = fresh(url)
    brokers: list[Any] = [from_url(stream) for _ in range(workers)]
    team = WorkerGroup(brokers, key)
    stop = asyncio.Event()
    tasks = []
    for i, b in enumerate(brokers):
        run = run_worker(
            b, team.handler(i), group=group, pattern=pattern, stop=stop, consumer=f"worker-{i}"
        )
        tasks.append(asyncio.ensure_future(run))
    try:
        yield team
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await brokers[0].drop()
        for b in brokers:
            await b.close()


def batches_per_room(events: Any) -> Any:
    """A stateful pipeline for a keyed worker group: every 5 messages of a room, one output
    ``{"room", "n"}`` (``batch_by_key``: the partial batches are its checkpointed state)."""
    from operators import batch_by_key, select

    def room(event: Any) -> str:
        return str(event.data["room"])

    def summary(batch: Any) -> dict[str, Any]:
        key, items = batch
        return {"room": key, "n": len(items)}

    return events.pipe(batch_by_key(room, count=5, name="rooms"), select(summary))


@dataclass
class KeyedWorkers:
    """``rxstreams worker`` processes in one keyed worker group, the broker they share and
    the outputs seen so far (``outputs``: output id -> data, so a replay counts once)."""

    broker: Any
    url: str
    group: str
    partitions: int
    procs: list[subprocess.Popen[bytes]]
    outputs: dict[str, Any] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _note(self, event: Any) -> None:
        self.outputs[event.id] = event.data
        self._changed.set()

    async def publish(self, subject: str, items: list[Any]) -> None:
        from streams import Event

        await self.broker.apublish_many(subject, [Event.create(d) for d in items])

    async def until(self, n: int, timeout: float = 30.0) -> None:
        """Wait until ``n`` distinct outputs were seen."""

        async def wait() -> None:
            while len(self.outputs) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def kill(self, worker: int) -> None:
        """SIGKILL one worker: no final checkpoint, its leases lapse, another takes over."""
        self.procs[worker].send_signal(signal.SIGKILL)
        self.procs[worker].wait()

    async def partitions_now(self) -> list[dict[str, Any]]:
        """Each unit's owner, checkpoint position, events processed and state size."""
        from adapters.brokers.partitions import Checkpoint, units
        from adapters.brokers.stateful_worker import state_store

        store = state_store(self.broker, self.group)
        try:
            names = units(self.partitions)
            owners = await store.owners(names)
            rows = []
            for unit in names:
                ckpt = await store.checkpoint(unit)
                size = 0
                if ckpt is not None and unit != "router":  # the operators' state, encoded
                    size = len(Checkpoint(ckpt.position, ckpt.state).encode())
                position = ckpt.position if ckpt else None
                if position and len(position) > 16:  # Redis ids are long: the tail differs
                    position = "…" + position[-12:]
                rows.append(
                    {
                        "unit": unit,
                        "owner": owners.get(unit),
                        "position": position,
                        "events": ckpt.events if ckpt else 0,
                        "state_bytes": size,
                    }
                )
            return rows
        finally:
            await store.close()

    async def graph(self, title: str | None = None) -> Any:
        """The group as a pipeline graph: router -> partitions, with owner, position, state."""
        from .graph import partition_graph

        return partition_graph(await self.partitions_now(), title)

    async def settled(self, live: int, timeout: float = 30.0) -> None:
        """Wait until every unit has an owner among ``live`` distinct members."""

        async def wait() -> None:
            while True:
                rows = await self.partitions_now()
                owners = {r["owner"] for r in rows}
                if None not in owners and len(owners) == live:
                    return
                await asyncio.sleep(0.25)

        await asyncio.wait_for(wait(), timeout)


@contextlib.asynccontextmanager
async def keyed_workers(
    url: str,
    *,
    group: str = "rooms",
    pattern: str = "chat.>",
    key: str = "data.room",
    partitions: int = 4,
    to: str = "out.batches",
    workers: int = 2,
    lease: float = 2.0,
    target: str = "adapters.notebook.scaleout:batches_per_room",
) -> AsyncIterator[KeyedWorkers]:
    """``workers`` ``rxstreams worker --key --partitions`` processes running ``target`` on
    a fresh stream of the broker at ``url``; stopped and everything dropped on exit."""
    from adapters.brokers import from_url
    from adapters.brokers.stateful_worker import state_store
    from streams import Position

    stream = fresh(url)
    broker: Any = from_url(stream)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root}
    args = [sys.executable, "-m", "adapters.cli", "worker", target, "--broker", stream]
    args += ["--group", group, "--pattern", pattern, "--key", key]
    args += ["--partitions", str(partitions), "--to", to, "--lease", str(lease)]
    procs = [
        subprocess.Popen(args, cwd=root, env=env, stderr=subprocess.DEVNULL) for _ in range(workers)
    ]
    team = KeyedWorkers(broker, stream, group, partitions, procs)
    start = Position((await broker.last_position()).epoch, 0)
    watch = broker.subscribe(to, since=start).subscribe(team._note)
    try:
        yield team
    finally:
        watch.dispose()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(state_store(broker, group).drop(), 10)
        await broker.drop()
        await broker.close()

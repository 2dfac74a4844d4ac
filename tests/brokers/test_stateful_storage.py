"""Where keyed worker groups keep their state, on the real NATS and Redis servers:

- checkpoints larger than one NATS message (a KV record pointing to an object in the
  object store; one Redis string) round-trip and are taken over, and a zombie's large
  commit leaves nothing behind;
- partition logs are trimmed up to what the stored checkpoint covers, never further (a
  zombie's commit trims nothing), and a takeover after trimming gives the right outputs;
- a checkpoint that cannot be stored is logged as an error and counted, covers nothing
  (no output, no trim), and the partition is started again from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from reactivex import Observable
from reactivex import operators as ops

from adapters.brokers import NatsBroker, RedisBroker
from adapters.brokers.leases import CheckpointTooLarge, Fenced
from adapters.brokers.nats_state import NatsState, pointed
from adapters.brokers.partition_logs import PartitionLogs
from adapters.brokers.partitions import (
    Checkpoint,
    CheckpointPolicy,
    key_function,
    partition_subject,
    units,
)
from adapters.brokers.positions import redis_offset
from adapters.brokers.redis_state import RedisState
from adapters.brokers.stages import dedupe_by
from adapters.brokers.stateful_worker import KeyedSettings, Member, state_store
from streams import Event, Position
from tests.integration.stateful_pipelines import canonical, make_inputs, oracle, pipeline

from .conftest import UNBOUNDED, close_stores, object_names, unique_stream
from .services import require

pytestmark = pytest.mark.broker
GROUP = "store"
LEASE = 1.0
GUARD = 60.0  # seconds a condition may take before the test fails (never a timed assertion)


@pytest.fixture(params=["nats", "redis"])
def net(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


@pytest.fixture
async def broker(net: str) -> AsyncIterator[Any]:
    cls = NatsBroker if net == "nats" else RedisBroker
    b = await cls(require(net), stream=unique_stream(), retention=UNBOUNDED).connect()
    try:
        yield b
    finally:
        store = state_store(b, GROUP)
        await asyncio.wait_for(store.drop(), 20)
        await b.drop()
        await b.close()


def _store(broker: Any, **limits: Any) -> Any:
    parts = PartitionLogs(broker, GROUP)
    cls = RedisState if hasattr(broker, "log_key") else NatsState
    return cls(broker, GROUP, parts, **limits)


async def _remaining(store: Any, partition: int) -> list[int]:
    """The offsets still stored in ``partition``'s log, oldest first."""
    logged = store.parts.of(partition)
    if isinstance(store, RedisState):
        return [redis_offset(i.decode()) for i, _ in await store.client.xrange(logged.log_key)]
    await store._store()
    state = (await store._js.stream_info(logged.stream)).state
    kept = list(range(state.first_seq, state.last_seq + 1)) if state.messages else []
    assert len(kept) == state.messages  # trimmed from the head only: no holes
    return kept


def _big_state(megabytes: float) -> dict[str, Any]:
    """What a ``dedupe`` over many long message ids holds, about ``megabytes`` encoded."""
    n = int(megabytes * 2**20 / 60)
    return {"dedupe": {"seen": [f"message-{i:08d}-{'x' * 40}" for i in range(n)]}}


async def test_a_checkpoint_of_five_megabytes_round_trips_and_is_taken_over(broker: Any) -> None:
    a_store, b_store = _store(broker), _store(broker)  # two members
    try:
        big = Checkpoint(None, _big_state(5), [], 7)
        a = await a_store.acquire("p0", "a", 30)
        assert a is not None and await a_store.claim(a) is None
        await a_store.commit(a, big, [])
        assert big.size > 5 * 2**20
        assert await a_store.checkpoint("p0") == big
        if isinstance(a_store, NatsState):  # the KV record only points to the object
            raw, _ = await a_store._get("ckpt.p0")
            assert raw is not None and len(raw) < 200
            assert pointed(raw) in await object_names(a_store)
        await a_store.release(a)
        b = await b_store.acquire("p0", "b", 30)
        assert b is not None
        assert await b_store.claim(b) == big  # the taker restores it whole
        bigger = Checkpoint(None, _big_state(5.5), [], 8)
        with pytest.raises(Fenced):
            await a_store.commit(a, bigger, [])  # the zombie's large commit
        assert await b_store.checkpoint("p0") == big
        if isinstance(b_store, NatsState):  # and it left no object behind
            assert await object_names(b_store) == [pointed((await b_store._get("ckpt.p0"))[0])]
        await b_store.commit(b, bigger, [])
        assert await a_store.checkpoint("p0") == bigger
        if isinstance(b_store, NatsState):  # the object it replaced is gone
            assert len(await object_names(b_store)) == 1
            small = Checkpoint(None, {"dedupe": {"seen": ["m1"]}}, [], 9)
            await b_store.commit(b, small, [])  # fits in the record again: no object left
            assert await a_store.checkpoint("p0") == small
            assert await object_names(b_store) == []
    finally:
        await close_stores(a_store, b_store)


async def test_a_crash_between_object_and_pointer_leaves_nothing_after_the_next_claim() -> None:
    broker = await NatsBroker(require("nats"), stream=unique_stream()).connect()
    store = _store(broker, inline_limit=1000)
    try:
        a = await store.acquire("p0", "a", 30)
        assert a is not None
        await store.claim(a)
        kept = Checkpoint(None, _big_state(0.01), [], 1)
        await store.commit(a, kept, [])
        name = pointed((await store._get("ckpt.p0"))[0])
        objects = await store._object_store(create=False)
        # What a member that died after writing its next object, before the pointer, left:
        await objects.put(f"p0.{a.token}.orphan", b"never pointed to")
        await objects.put("p1.1.other", b"another unit's")
        assert len(await object_names(store)) == 3
        await store.release(a)
        b = await store.acquire("p0", "b", 30)
        assert b is not None and await store.claim(b) == kept
        assert name is not None and await object_names(store) == sorted([name, "p1.1.other"])
    finally:
        await asyncio.wait_for(store.drop(), 20)
        await broker.drop()
        await broker.close()


async def test_a_checkpoint_over_the_limit_is_refused_and_the_last_one_kept(broker: Any) -> None:
    store = _store(broker, max_checkpoint=2000)
    try:
        a = await store.acquire("p0", "a", 30)
        assert a is not None
        await store.claim(a)
        small = Checkpoint(None, {"n": 1}, [], 1)
        await store.commit(a, small, [])
        out = [("out.x", Event.create(1, id="o1"))]
        with pytest.raises(CheckpointTooLarge):
            await store.commit(a, Checkpoint(None, _big_state(0.01), [], 2), out)
        assert await store.checkpoint("p0") == small
        assert (await broker.health())["messages"] == 0  # its output was not published
    finally:
        await close_stores(store)


async def test_a_commit_trims_its_partition_log_and_a_zombie_trims_nothing(broker: Any) -> None:
    a_store, b_store = _store(broker), _store(broker)
    try:
        subject = partition_subject(GROUP, 0)
        events = [Event.create(i, subject=subject) for i in range(10)]
        at = [p.offset for p in await a_store.parts.of(0).apublish_many(subject, events)]
        pos = [str(Position(a_store.parts.of(0).epoch, o)) for o in at]
        a = await a_store.acquire("p0", "a", 30)
        assert a is not None
        await a_store.claim(a)
        await a_store.commit(a, Checkpoint(pos[3], {}, [], 4), [])
        assert await _remaining(a_store, 0) == at[3:]  # the checkpointed entry is kept
        await a_store.release(a)
        b = await b_store.acquire("p0", "b", 30)
        assert b is not None
        restored = await b_store.claim(b)
        assert restored is not None and restored.position == pos[3]
        with pytest.raises(Fenced):  # the zombie went on to entry 8: not stored, not trimmed
            await a_store.commit(a, Checkpoint(pos[8], {}, [], 9), [])
        assert await _remaining(b_store, 0) == at[3:]
        await b_store.commit(b, Checkpoint(pos[6], {}, [], 7), [])
        assert await _remaining(b_store, 0) == at[6:]
    finally:
        await close_stores(a_store, b_store)


class Outputs:
    """Every output of the group, once per output id."""

    def __init__(self, broker: Any) -> None:
        self.by_id: dict[str, bytes] = {}
        self.broker = broker
        self._watch: Any = None

    async def start(self) -> Outputs:
        start = Position((await self.broker.last_position()).epoch, 0)
        self._watch = self.broker.subscribe("out.>", since=start).subscribe(self._note)
        return self

    def _note(self, event: Event) -> None:
        self.by_id.setdefault(event.id, canonical(event.data))

    def contents(self) -> Counter[bytes]:
        return Counter(self.by_id.values())

    def stop(self) -> None:
        self._watch.dispose()


async def _until(done: Callable[[], Any], what: str) -> None:
    """Wait until ``done()`` (a bool, or an awaitable of one) is true."""
    deadline = asyncio.get_running_loop().time() + GUARD
    while True:
        result = done()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _committed(store: Any, partitions: int) -> int:
    found = [await store.checkpoint(u) for u in units(partitions)[1:]]
    return sum(c.events for c in found if c is not None)


class Running:
    """One member of the group, run in this process until :meth:`stop`."""

    def __init__(
        self,
        broker: Any,
        chain: Callable[[Observable[Event]], Observable[Any]],
        partitions: int,
        name: str,
        store: Any = None,
    ) -> None:
        settings = KeyedSettings(
            GROUP, "in.>", key_function("data.room"), partitions, "out.x",
            CheckpointPolicy(200, 0.5), LEASE,
        )  # fmt: skip
        self.member = Member(broker, chain, settings, name, store)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.member.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 20)


async def _publish(broker: Any, records: list[dict[str, Any]]) -> None:
    for i in range(0, len(records), 500):
        await broker.apublish_many("in.msg", [Event.create(d) for d in records[i : i + 500]])


async def test_logs_hold_only_the_uncovered_tail_and_a_takeover_after_trimming_is_right(
    broker: Any,
) -> None:
    records = make_inputs(1200, rooms=6)
    outputs = await Outputs(broker).start()
    store = state_store(broker, GROUP)
    try:
        await _publish(broker, records[:600])
        first = Running(broker, pipeline, 2, "first")
        await _until(lambda: _equals(_committed(store, 2), 600), "the first half checkpointed")
        await first.stop()
        await _assert_trimmed(store, 2)
        await _publish(broker, records[600:])
        second = Running(broker, pipeline, 2, "second")  # restores the trimmed partitions
        await _until(lambda: _equals(_committed(store, 2), 1200), "everything checkpointed")
        await second.stop()
        await _assert_trimmed(store, 2)
        want = oracle(records)
        await _until(lambda: outputs.contents() == want, "every output")
    finally:
        outputs.stop()
        await close_stores(store)


async def _equals(count: Any, n: int) -> bool:
    return bool(await count == n)


async def _assert_trimmed(store: Any, partitions: int) -> None:
    """Each partition log holds the entry its checkpoint names and nothing before it."""
    for n in range(partitions):
        checkpoint = await store.checkpoint(f"p{n}")
        if checkpoint is None or not checkpoint.position:
            continue  # no event reached this partition
        assert await _remaining(store, n) == [Position.parse(checkpoint.position).offset]


def _dedupe(events: Observable[Event]) -> Observable[Any]:
    def data(e: Event) -> Any:
        return e.data

    return events.pipe(ops.map(data), dedupe_by(lambda d: d["msg"], name="dedupe"))


def _long_ids(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"room": "r0", "msg": f"m{i:06d}-{'x' * 400}"} for i in range(start, stop)]


async def test_a_partition_whose_state_outgrows_a_message_goes_on_after_a_takeover(
    broker: Any,
) -> None:
    """A dedupe holding ~2.5 MB of ids (NATS: past ``max_payload``, so in the object store)
    keeps committing, and the member taking over drops the repeats of what it restored."""
    outputs = await Outputs(broker).start()
    store = state_store(broker, GROUP)
    try:
        await _publish(broker, _long_ids(0, 6000))
        first = Running(broker, _dedupe, 1, "first")
        await _until(lambda: _equals(_committed(store, 1), 6000), "the first part checkpointed")
        await first.stop()
        stored = await store.checkpoint("p0")
        assert stored is not None and len(stored.state["dedupe"]["seen"]) == 6000
        if isinstance(store, NatsState):
            assert pointed((await store._get("ckpt.p0"))[0]) is not None
        await _publish(broker, _long_ids(3000, 9000))  # half of them repeats
        second = Running(broker, _dedupe, 1, "second")
        await _until(lambda: _equals(_committed(store, 1), 12000), "everything checkpointed")
        await second.stop()
        await _until(lambda: len(outputs.by_id) >= 9000, "every output")
        msgs = sorted(orjson.loads(v)["msg"] for v in outputs.by_id.values())
        assert msgs == [d["msg"] for d in _long_ids(0, 9000)]
    finally:
        outputs.stop()
        await close_stores(store)


async def test_a_checkpoint_that_cannot_be_stored_is_an_error_and_covers_nothing(
    broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "adapters.brokers.stateful_worker")
    records = make_inputs(300, rooms=3)
    outputs = await Outputs(broker).start()
    store = state_store(broker, GROUP)
    failing = _store(broker, max_checkpoint=300)  # every partition checkpoint is too large
    try:
        await _publish(broker, records)
        first = Running(broker, pipeline, 1, "failing", failing)

        async def retried() -> bool:
            return first.member.checkpoint_failures["p0"] >= 2  # failed, restarted, failed

        await _until(retried, "the partition to fail twice")
        stored = await store.checkpoint("p0")  # nothing covered (NATS: the claim's empty one)
        assert stored is None or (stored.position is None and stored.state == {})
        routed = await store.checkpoint("router")
        assert routed is not None and routed.events == len(records)
        assert len(await _remaining(store, 0)) == len(records)  # ...nothing trimmed...
        assert (await broker.health())["messages"] == len(records)  # ...no output
        await first.stop()
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("p0" in e and "failed" in e and "CheckpointTooLarge" in e for e in errors)
        second = Running(broker, pipeline, 1, "second")  # takes over: replays it all
        await _until(lambda: _equals(_committed(store, 1), len(records)), "the takeover")
        await second.stop()
        want = oracle(records)
        await _until(lambda: outputs.contents() == want, "every output")
    finally:
        outputs.stop()
        await close_stores(store, failing)


async def test_a_store_closes_the_partition_logs_it_made_and_only_those(broker: Any) -> None:
    made = state_store(broker, GROUP)  # makes its own partition logs
    log = made.parts.of(0)  # type: ignore[attr-defined]
    await log.last_position()  # connected
    await made.close()
    assert made.parts.of(0) is not log  # type: ignore[attr-defined]  # closed and forgotten
    await made.close()

    parts = PartitionLogs(broker, GROUP)  # a member's own, shared with its store
    given = state_store(broker, GROUP, parts)
    kept = parts.of(0)
    await given.close()
    assert parts.of(0) is kept  # the member closes them, not the store
    await parts.close()

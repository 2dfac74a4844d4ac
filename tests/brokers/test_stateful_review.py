"""Races on large (object-store) checkpoints in NATS, against the real server: concurrent
claims, a zombie's commit racing a claim, readers racing commits that delete objects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.brokers import NatsBroker
from adapters.brokers.leases import Fenced, Lease
from adapters.brokers.nats_state import NatsState, pointed
from adapters.brokers.partition_logs import PartitionLogs
from adapters.brokers.partitions import Checkpoint

from .conftest import UNBOUNDED, close_stores, object_names, unique_stream
from .services import require

pytestmark = pytest.mark.broker
GROUP = "review"


@pytest.fixture
async def broker() -> AsyncIterator[Any]:
    b = await NatsBroker(require("nats"), stream=unique_stream(), retention=UNBOUNDED).connect()
    cleanup = NatsState(b, GROUP, PartitionLogs(b, GROUP))
    try:
        yield b
    finally:
        await asyncio.wait_for(cleanup.drop(), 20)
        await b.drop()
        await b.close()


def _store(broker: Any) -> NatsState:
    return NatsState(broker, GROUP, PartitionLogs(broker, GROUP), inline_limit=1000)


def _big(n: int) -> Checkpoint:
    return Checkpoint(None, {"seen": [f"id-{n}-{i:06d}" for i in range(2000)]}, [], n)


async def _commits(store: NatsState, lease: Lease, cp: Checkpoint) -> bool:
    try:
        await store.commit(lease, cp, [])
    except Fenced:
        return False
    return True


async def test_of_two_concurrent_claims_only_the_later_can_commit(broker: Any) -> None:
    a_store, b_store = _store(broker), _store(broker)
    try:
        first = Lease("p0", "a", 0, 0)
        await a_store.claim(first)
        await a_store.commit(first, _big(1), [])
        a, b = Lease("p0", "a", 0, 0), Lease("p0", "b", 0, 0)
        got = await asyncio.gather(a_store.claim(a), b_store.claim(b))
        assert list(got) == [_big(1), _big(1)]
        later, earlier = (a, b) if a.token > b.token else (b, a)
        store = {id(a): a_store, id(b): b_store}
        assert not await _commits(store[id(earlier)], earlier, _big(2))
        assert await _commits(store[id(later)], later, _big(3))
        assert await a_store.checkpoint("p0") == _big(3)
        raw, _ = await a_store._get("ckpt.p0")
        assert await object_names(a_store) == [pointed(raw)]
    finally:
        await close_stores(a_store, b_store)


async def test_a_zombie_commit_racing_a_claim_is_either_taken_over_or_fenced(
    broker: Any,
) -> None:
    z_store, n_store = _store(broker), _store(broker)
    try:
        z = Lease("p0", "z", 0, 0)
        await z_store.claim(z)
        await z_store.commit(z, _big(1), [])
        n = Lease("p0", "n", 0, 0)
        committed, found = await asyncio.gather(_commits(z_store, z, _big(2)), n_store.claim(n))
        assert found == (_big(2) if committed else _big(1))
        assert await _commits(n_store, n, _big(3))
        assert not await _commits(z_store, z, _big(4))
        raw, _ = await n_store._get("ckpt.p0")
        assert await object_names(n_store) == [pointed(raw)]
        assert await n_store.checkpoint("p0") == _big(3)
    finally:
        await close_stores(z_store, n_store)


async def test_a_reader_racing_commits_sees_whole_checkpoints(broker: Any) -> None:
    w_store, r_store = _store(broker), _store(broker)
    try:
        w = Lease("p0", "w", 0, 0)
        await w_store.claim(w)
        await w_store.commit(w, _big(0), [])
        done = asyncio.Event()

        async def write() -> None:
            for i in range(1, 40):
                await w_store.commit(w, _big(i), [])
            done.set()

        async def read() -> list[Any]:
            seen = []
            while not done.is_set():
                seen.append(await r_store.checkpoint("p0"))
            return seen

        _, seen = await asyncio.gather(write(), read())
        assert seen and all(cp is not None and cp == _big(cp.events) for cp in seen)
    finally:
        await close_stores(w_store, r_store)

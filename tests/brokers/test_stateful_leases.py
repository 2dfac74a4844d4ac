"""The leases and fencing of keyed worker groups, against the real NATS KV and Redis
scripts: whatever members do in whatever order (take a unit, give it up, lose it to
expiry, commit), a checkpoint commit is accepted exactly when its member took the unit
last, so a member that lost its lease and was taken over can never commit again."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.brokers import NatsBroker, RedisBroker
from adapters.brokers.leases import Fenced, Lease
from adapters.brokers.partitions import Checkpoint
from adapters.brokers.stateful_worker import state_store
from streams import Event

from .conftest import UNBOUNDED, unique_stream
from .services import require

pytestmark = pytest.mark.broker
UNIT = "p0"
MEMBERS = ["a", "b", "c"]

ops = st.lists(
    st.tuples(st.sampled_from(["take", "release", "expire", "commit"]), st.sampled_from(MEMBERS)),
    min_size=1,
    max_size=25,
)


async def _expire(store: Any, kind: str) -> None:
    """What time does to a lease nobody renews: it lapses (without fencing anyone)."""
    if kind == "redis":
        await store.client.delete(store._key("lease", UNIT))
    else:
        raw, rev = await store._get(f"lease.{UNIT}")
        if raw:
            held = {**orjson.loads(raw), "until": 0}
            await store._cas(f"lease.{UNIT}", orjson.dumps(held), rev)


async def _play(kind: str, steps: list[tuple[str, str]]) -> None:
    cls = NatsBroker if kind == "nats" else RedisBroker
    broker = cls(require(kind), stream=unique_stream(), retention=UNBOUNDED)
    store = state_store(broker, "leases")
    held: dict[str, Lease] = {}
    last_taker: str | None = None
    n = 0
    try:
        for op, member in steps:
            if op == "take":
                lease = await store.acquire(UNIT, member, 30)
                if lease is None:  # held by another, unexpired
                    continue
                await store.claim(lease)
                held[member] = lease
                last_taker = member
            elif op == "release" and member in held:
                await store.release(held[member])
            elif op == "expire":
                await _expire(store, kind)
            elif op == "commit" and member in held:
                n += 1
                out = [("out.x", Event.create(n, id=f"{member}-{n}"))]
                try:
                    await store.commit(held[member], Checkpoint(None, {"n": n}, [], n), out)
                    accepted = True
                except Fenced:
                    accepted = False
                assert accepted == (member == last_taker), (op, member, last_taker)
                if accepted:
                    got = await store.checkpoint(UNIT)
                    assert got is not None and got.state == {"n": n}
    finally:
        await store.drop()
        await broker.drop()
        await broker.close()


@pytest.fixture(params=["nats", "redis"])
def net(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


@pytest.mark.parametrize("kind", ["nats", "redis"])
def test_only_the_last_member_to_take_a_unit_can_commit(kind: str) -> None:
    require(kind)

    @settings(max_examples=max(10, settings.default.max_examples // 4))
    @given(steps=ops)
    def check(steps: list[tuple[str, str]]) -> None:
        asyncio.run(_play(kind, steps))

    check()


async def test_a_held_lease_is_refused_to_others_until_released_or_lapsed(net: str) -> None:
    cls = NatsBroker if net == "nats" else RedisBroker
    broker = cls(require(net), stream=unique_stream(), retention=UNBOUNDED)
    store = state_store(broker, "leases")
    try:
        a = await store.acquire(UNIT, "a", 30)
        assert a is not None
        assert await store.acquire(UNIT, "b", 30) is None
        assert await store.renew(a, 30)
        assert await store.owners([UNIT, "p1"]) == {UNIT: "a"}
        await store.release(a)
        b = await store.acquire(UNIT, "b", 30)
        assert b is not None and await store.owners([UNIT]) == {UNIT: "b"}
        assert not await store.renew(a, 30)  # a's lease is gone for good
        short = await store.acquire("p1", "c", 0.3)
        assert short is not None
        await asyncio.sleep(0.5)
        assert await store.acquire("p1", "a", 30) is not None  # lapsed: taken over
        assert await store.heartbeat("a", 30) == ["a"]
        assert await store.heartbeat("b", 30) == ["a", "b"]
        await store.leave("a")
        assert await store.heartbeat("b", 30) == ["b"]
    finally:
        await store.drop()
        await broker.drop()
        await broker.close()

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams import AsyncBuffer, BoundedBuffer, Overflow, OverflowPolicy

sizes = st.lists(st.integers(0, 300), max_size=60)
bounds = st.tuples(st.integers(1, 10), st.none() | st.integers(1, 1000))


@given(sizes, bounds)
def test_drop_oldest_keeps_the_newest_suffix_within_bounds(items: list[int], b: tuple):
    max_items, max_bytes = b
    buf = BoundedBuffer[int](max_items, max_bytes, "drop_oldest")
    for i, size in enumerate(items):
        assert buf.offer(i, size)
        assert len(buf) <= max_items
        assert max_bytes is None or buf.bytes <= max_bytes or len(buf) == 1
    kept = buf.drain()
    assert kept == list(range(len(items)))[len(items) - len(kept) :]
    assert buf.dropped == len(items) - len(kept)


@given(sizes, bounds, st.sampled_from(["disconnect", "error", "block"]))
def test_refusing_policies_keep_the_prefix(items: list[int], b: tuple, policy: str):
    max_items, max_bytes = b
    buf = BoundedBuffer[int](max_items, max_bytes, policy)
    accepted = []
    for i, size in enumerate(items):
        try:
            ok = buf.offer(i, size)
        except Overflow:
            ok = False
            assert policy == "error"
        if ok:
            accepted.append(i)
        assert len(buf) <= max_items
        assert max_bytes is None or buf.bytes <= max_bytes or len(buf) == 1
    assert buf.drain() == accepted
    assert buf.overflowed == (policy != "block" and len(accepted) < len(items))


@given(st.lists(st.integers(), min_size=1, max_size=30))
def test_latest_only_keeps_just_the_newest(items: list[int]):
    buf = BoundedBuffer[int](10, None, "latest_only")
    for x in items:
        buf.offer(x)
    assert buf.drain() == [items[-1]]
    assert buf.dropped == len(items) - 1


def test_oversize_item_travels_alone():
    buf = BoundedBuffer[str](10, 100, "disconnect")
    assert buf.offer("big", 500)
    assert not buf.offer("next", 1)
    assert buf.drain() == ["big"]


def test_bad_bounds():
    with pytest.raises(ValueError):
        BoundedBuffer(0)
    with pytest.raises(ValueError):
        BoundedBuffer(1, 0)
    with pytest.raises(ValueError):
        BoundedBuffer(1, 1, "nope")  # type: ignore[arg-type]


async def test_async_drain_takes_everything_queued_at_once():
    buf: AsyncBuffer[int] = AsyncBuffer(100)
    for i in range(5):
        buf.offer(i)
    assert await buf.drain() == [0, 1, 2, 3, 4]
    waiter = asyncio.ensure_future(buf.drain())
    await asyncio.sleep(0)
    assert not waiter.done()
    buf.offer(9)
    buf.offer(10)
    assert await waiter == [9, 10]


async def test_block_policy_put_waits_for_room():
    buf: AsyncBuffer[int] = AsyncBuffer(2, None, OverflowPolicy.BLOCK)
    await buf.put(1)
    await buf.put(2)
    third = asyncio.ensure_future(buf.put(3))
    await asyncio.sleep(0)
    assert not third.done()
    assert not buf.offer(99)  # a push producer is refused, never grows the buffer
    assert await buf.drain() == [1, 2]
    await third
    assert await buf.drain() == [3]


async def test_disconnect_closes_with_overflow_after_queued_items():
    buf: AsyncBuffer[int] = AsyncBuffer(2, None, "disconnect")
    assert buf.offer(1) and buf.offer(2)
    assert not buf.offer(3)
    assert buf.closed
    assert await buf.drain() == [1, 2]
    with pytest.raises(Overflow):
        await buf.drain()


async def test_close_ends_iteration_after_queued_items():
    buf: AsyncBuffer[int] = AsyncBuffer()
    buf.offer(1)
    buf.offer(2)
    buf.close()
    assert [x async for x in buf] == [1, 2]

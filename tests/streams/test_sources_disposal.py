"""Sources stop at disposal: nothing is pulled from a shared iterator past what was delivered."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import operators as ops

from streams import from_async_iterable, from_iterable


class Counted:
    """An iterator that counts how many items were pulled from it."""

    def __init__(self, n: int) -> None:
        self.items = iter(range(n))
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        item = next(self.items)
        self.pulled += 1
        return item


@given(st.integers(0, 20), st.integers(1, 10))
def test_from_iterable_pulls_nothing_past_disposal(n: int, k: int) -> None:
    source = Counted(n)
    got: list[int] = []
    from_iterable(source).pipe(ops.take(k)).subscribe(got.append)
    assert got == list(range(min(n, k)))
    assert source.pulled == min(n, k)
    rest: list[int] = []  # the shared iterator goes on where take() stopped
    from_iterable(source).subscribe(rest.append)
    assert got + rest == list(range(n))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30), st.integers(1, 10))
def test_from_async_iterable_stops_draining_at_disposal(ready: int, k: int) -> None:
    async def main() -> tuple[list[int], int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(ready):
            queue.put_nowait(i)

        async def drain() -> object:
            while True:
                yield await queue.get()

        got: list[int] = []
        from_async_iterable(drain()).pipe(ops.take(k)).subscribe(got.append)
        for _ in range(5):
            await asyncio.sleep(0)
        return got, queue.qsize()

    got, left = asyncio.run(main())
    assert got == list(range(min(ready, k)))
    assert left == ready - min(ready, k)


@pytest.mark.timeout(10)
async def test_from_async_iterable_disposed_from_on_next_takes_nothing_more() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(100):
        queue.put_nowait(i)

    async def drain() -> object:
        while True:
            yield await queue.get()

    got: list[int] = []
    box: list[reactivex.abc.DisposableBase] = []

    def on_next(x: int) -> None:
        got.append(x)
        if len(got) == 3:
            box[0].dispose()

    box.append(from_async_iterable(drain()).subscribe(on_next))
    await asyncio.sleep(0.01)
    assert got == [0, 1, 2] and queue.qsize() == 97

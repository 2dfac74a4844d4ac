"""Where streams go: async iterators with bounded buffers, and NDJSON writers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import IO, Any, TypeVar

import orjson
from reactivex import Observable

from .buffer import AsyncBuffer, OverflowPolicy
from .event import Event

__all__ = ["Subscription", "to_async_iterator", "write_ndjson"]

T = TypeVar("T")


def _size(item: Any) -> int:
    return len(item.encode()) if isinstance(item, Event) else 0


class Subscription(AsyncIterator[T]):
    """An async iterator over an observable, through a bounded buffer.

    Subscribes at creation; ``aclose()`` (or leaving ``async with``) unsubscribes.
    Overflow follows the buffer's policy; ``block`` is refused here because a
    push source cannot wait: use ``drop_oldest``, ``latest_only``, ``error`` or
    ``disconnect`` (the last two end iteration with :class:`~streams.buffer.Overflow`).
    """

    def __init__(
        self,
        source: Observable[T],
        max_items: int = 1000,
        max_bytes: int | None = 1 << 20,
        policy: OverflowPolicy | str = OverflowPolicy.ERROR,
    ) -> None:
        policy = OverflowPolicy(policy)
        if policy is OverflowPolicy.BLOCK:
            raise ValueError("'block' needs a producer that can wait; an Observable cannot")
        if policy is OverflowPolicy.ERROR:
            policy = OverflowPolicy.DISCONNECT  # same outcome, but surfaced at the consumer
        self.buffer: AsyncBuffer[T] = AsyncBuffer(max_items, max_bytes, policy)
        self._pending: list[T] = []

        def on_next(item: T) -> None:
            self.buffer.offer(item, _size(item))

        self._disposable = source.subscribe(
            on_next,
            self.buffer.close,
            self.buffer.close,
        )

    @property
    def dropped(self) -> int:
        return self.buffer.buffer.dropped

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        if not self._pending:
            batch = await self.buffer.drain()
            if not batch:
                self._disposable.dispose()
                raise StopAsyncIteration
            batch.reverse()
            self._pending = batch
        return self._pending.pop()

    async def batches(self) -> AsyncIterator[list[T]]:
        """Everything queued since the last batch, for coalesced writes."""
        while batch := await self.buffer.drain():
            yield batch

    async def aclose(self) -> None:
        self._disposable.dispose()
        self.buffer.close()

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def to_async_iterator(
    source: Observable[T],
    max_items: int = 1000,
    max_bytes: int | None = 1 << 20,
    policy: OverflowPolicy | str = OverflowPolicy.ERROR,
) -> Subscription[T]:
    """Consume an observable with ``async for``, through a bounded buffer.

    >>> async def first_two(obs):
    ...     out = []
    ...     async with to_async_iterator(obs) as it:
    ...         async for x in it:
    ...             out.append(x)
    ...             if len(out) == 2:
    ...                 break
    ...     return out
    """
    return Subscription(source, max_items, max_bytes, policy)


def _ndjson_line(item: Any) -> bytes:
    if isinstance(item, Event):
        return item.encode() + b"\n"
    return orjson.dumps(item) + b"\n"


async def write_ndjson(source: Observable[Any], out: IO[bytes]) -> int:
    """Write every item as one NDJSON line as it arrives (events reuse their cached bytes).

    Returns the number of lines written once the source completes; a source error is
    raised after everything that arrived before it was written.
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    count = 0

    def on_next(item: Any) -> None:
        nonlocal count
        out.write(_ndjson_line(item))
        count += 1

    def on_error(exc: Exception) -> None:
        if not done.done():
            done.set_exception(exc)

    def on_completed() -> None:
        if not done.done():
            done.set_result(None)

    disposable = source.subscribe(on_next, on_error, on_completed)
    try:
        await done
    finally:
        disposable.dispose()
    return count

"""The one bounded buffer used wherever a push stream meets something slower.

:class:`BoundedBuffer` is sans-I/O: it holds items within an item and a byte bound
and applies a named overflow policy. :class:`AsyncBuffer` is the thin asyncio shell
around it: a producer offers items synchronously (Rx is push-only) or awaits room
(``block``), and a consumer takes *everything* queued at once, so a socket writer
turns a burst into one write.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Generic, TypeVar

__all__ = ["AsyncBuffer", "BoundedBuffer", "Overflow", "OverflowPolicy"]

T = TypeVar("T")


class OverflowPolicy(StrEnum):
    """What happens when an item arrives and the buffer is full.

    - ``block``: refuse it; :meth:`AsyncBuffer.put` waits for room (in-process consumers).
    - ``disconnect``: refuse it and mark the buffer overflowed; the edge drops the client,
      which resumes from history.
    - ``drop_oldest``: make room by dropping the oldest items (counted in ``dropped``).
    - ``latest_only``: keep only the newest item (conflation: slow readers see the latest).
    - ``error``: refuse it and raise :class:`Overflow`.
    """

    BLOCK = "block"
    DISCONNECT = "disconnect"
    DROP_OLDEST = "drop_oldest"
    LATEST_ONLY = "latest_only"
    ERROR = "error"


class Overflow(Exception):
    """The buffer was full under the ``error`` or ``disconnect`` policy."""


class BoundedBuffer(Generic[T]):
    """A FIFO bounded in items and bytes, with a named overflow policy.

    An item larger than ``max_bytes`` is still accepted into an empty buffer, so
    it travels alone instead of never.

    >>> b = BoundedBuffer[int](max_items=2, policy="drop_oldest")
    >>> [b.offer(i) for i in range(3)], b.drain(), b.dropped
    ([True, True, True], [1, 2], 1)
    """

    __slots__ = ("_items", "bytes", "dropped", "max_bytes", "max_items", "overflowed", "policy")

    def __init__(
        self,
        max_items: int = 1000,
        max_bytes: int | None = 1 << 20,
        policy: OverflowPolicy | str = OverflowPolicy.DROP_OLDEST,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be positive or None")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.policy = OverflowPolicy(policy)
        self._items: deque[tuple[T, int]] = deque()
        self.bytes = 0
        self.dropped = 0
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._items)

    def fits(self, size: int) -> bool:
        """Whether an item of ``size`` bytes would be accepted without overflowing now
        (an empty buffer takes anything, so an oversized item travels alone)."""
        if not self._items:
            return True
        if len(self._items) >= self.max_items:
            return False
        return self.max_bytes is None or self.bytes + size <= self.max_bytes

    def offer(self, item: T, size: int = 0) -> bool:
        """Add ``item`` (``size`` bytes); returns False if the policy refused it."""
        policy = self.policy
        if policy is OverflowPolicy.LATEST_ONLY:
            self.dropped += len(self._items)
            self._items.clear()
            self.bytes = 0
        elif not self.fits(size):
            if policy is OverflowPolicy.DROP_OLDEST:
                while self._items and not self.fits(size):
                    _, old = self._items.popleft()
                    self.bytes -= old
                    self.dropped += 1
            else:
                if policy is not OverflowPolicy.BLOCK:
                    self.overflowed = True
                    self.dropped += 1
                if policy is OverflowPolicy.ERROR:
                    raise Overflow(f"buffer full ({len(self._items)} items, {self.bytes} bytes)")
                return False
        self._items.append((item, size))
        self.bytes += size
        return True

    def drain(self) -> list[T]:
        """Take everything queued, oldest first."""
        items = [item for item, _ in self._items]
        self._items.clear()
        self.bytes = 0
        return items

    def pop(self) -> T:
        """Take the oldest item; raises IndexError when empty."""
        item, size = self._items.popleft()
        self.bytes -= size
        return item


_CLOSED = object()


class AsyncBuffer(Generic[T]):
    """An asyncio shell around :class:`BoundedBuffer`.

    Producers call :meth:`offer` (sync, never blocks) or ``await`` :meth:`put` (waits
    for room under ``block``). Consumers ``await`` :meth:`drain` for a batch of
    everything queued, or iterate item by item with ``async for``. :meth:`close`
    ends iteration after what is queued; ``close(exc)`` raises ``exc`` at the end.
    All calls must come from the loop's thread.
    """

    def __init__(
        self,
        max_items: int = 1000,
        max_bytes: int | None = 1 << 20,
        policy: OverflowPolicy | str = OverflowPolicy.DROP_OLDEST,
    ) -> None:
        self.buffer: BoundedBuffer[T] = BoundedBuffer(max_items, max_bytes, policy)
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, item: T, size: int = 0) -> bool:
        """Queue ``item`` now; False when the policy refused it (or the buffer is closed)."""
        if self._closed:
            return False
        ok = self.buffer.offer(item, size)
        if ok:
            self._readable.set()
            if not self.buffer.fits(0):
                self._writable.clear()
        elif self.buffer.policy is OverflowPolicy.DISCONNECT:
            self.close(Overflow("consumer too slow: buffer overflowed"))
        return ok

    async def put(self, item: T, size: int = 0) -> None:
        """Queue ``item``, waiting for room when full (the ``block`` policy)."""
        while True:
            if self._closed:
                raise Overflow("buffer closed")
            if self.buffer.policy is not OverflowPolicy.BLOCK or self.buffer.fits(size):
                self.offer(item, size)
                return
            self._writable.clear()
            await self._writable.wait()

    def close(self, error: BaseException | None = None) -> None:
        """No more items; the consumer sees what is queued, then the end (or ``error``)."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._readable.set()
        self._writable.set()

    async def drain(self) -> list[T]:
        """Wait for items and take them all; ``[]`` once closed and empty."""
        while not len(self.buffer):
            if self._closed:
                if self._error is not None:
                    raise self._error
                return []
            self._readable.clear()
            await self._readable.wait()
        items = self.buffer.drain()
        self._writable.set()
        return items

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            batch = await self.drain()
            if not batch:
                return
            for item in batch:
                yield item

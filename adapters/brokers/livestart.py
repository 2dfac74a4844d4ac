"""Where a live subscription starts: when ``subscribe()`` was called, not when its task
first reached the server.

A networked subscription without ``since`` learns the log's last position in a task that
starts a little after ``subscribe()`` returned, so an event the caller publishes right
away may already be in the log when the task asks, and would be skipped. A :class:`Pin`,
taken synchronously at subscribe time, counts this broker instance's publishes from then
on; the task asks the server for the last position, closes the pin, waits for the
publishes it counted to settle and starts just before the first of them if that is
earlier (:meth:`Pin.start`). Events other processes publish concurrently are, as
always, delivered from wherever the log stood when the task asked.

Why not a cached high-water mark: it goes stale in a process that publishes rarely, and
a new live subscription would then replay everything other processes published since.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence

from streams import Position

__all__ = ["LiveStarts", "Pin"]


class Pin:
    """One live subscription's start, taken at subscribe time.

    >>> starts = LiveStarts()
    >>> pin = starts.pin()
    >>> with starts.publishing() as note:
    ...     note([Position("e", 7), Position("e", 8)])
    >>> pin.resolve(Position("e", 9))  # the task read 9: start before the own publish
    Position(epoch='e', offset=6)
    >>> pin.resolve(Position("other", 9))  # a new epoch: own publishes do not apply
    Position(epoch='other', offset=9)
    """

    __slots__ = ("_idle", "_starts", "first", "open", "pending")

    def __init__(self, starts: LiveStarts) -> None:
        self._starts = starts
        self.open = True
        self.pending = 0  # counted publishes still awaiting their acknowledgement
        self.first: dict[str, int] = {}  # epoch -> lowest offset a counted publish got
        self._idle: asyncio.Event | None = None

    def note(self, positions: Sequence[Position]) -> None:
        for pos in positions:
            if pos.offset < self.first.get(pos.epoch, pos.offset + 1):
                self.first[pos.epoch] = pos.offset

    def finished(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self._idle is not None:
            self._idle.set()

    def close(self) -> None:
        """Count no further publishes (idempotent; also the release of an unused pin)."""
        if self.open:
            self.open = False
            self._starts._open.discard(self)

    def resolve(self, last: Position) -> Position:
        """The start: ``last``, or just before the first counted publish if earlier."""
        first = self.first.get(last.epoch)
        if first is None or first > last.offset:
            return last
        return Position(last.epoch, max(first - 1, 0))

    async def start(self, last: Position) -> Position:
        """Close, wait for counted publishes to be acknowledged (or fail), then
        :meth:`resolve`. Call with ``last`` just read from the server: a publish begun
        after that read returned is stored after ``last`` anyway."""
        self.close()
        if self.pending:
            self._idle = asyncio.Event()
            await self._idle.wait()
        return self.resolve(last)


class LiveStarts:
    """The open pins of one broker instance; its publishes report to them.

    >>> starts = LiveStarts()
    >>> pin = starts.pin()
    >>> pin.close()
    >>> with starts.publishing() as note:  # after close: not counted
    ...     note([Position("e", 1)])
    >>> pin.first, len(starts)
    ({}, 0)
    """

    def __init__(self) -> None:
        self._open: set[Pin] = set()

    def __len__(self) -> int:
        return len(self._open)

    def pin(self) -> Pin:
        """A new pin, counting every publish that begins from now until it is closed."""
        pin = Pin(self)
        self._open.add(pin)
        return pin

    @contextlib.contextmanager
    def publishing(self) -> Iterator[Callable[[Sequence[Position]], None]]:
        """Around one publish (or batch): yields ``note(positions)`` for what was stored."""
        pins = tuple(self._open)
        for pin in pins:
            pin.pending += 1

        def note(positions: Sequence[Position]) -> None:
            for pin in pins:
                pin.note(positions)

        try:
            yield note
        finally:
            for pin in pins:
                pin.finished()

"""One client's queue and its overflow decisions, free of I/O.

Every streaming client (SSE, NDJSON, WebSocket) has one :class:`ClientQueue`. It holds
two kinds of items, in one order:

- **live** items (a :data:`~adapters.server.framing.Segment` of events a shared topic
  received in one loop iteration, or a filtered live subscription's one-event segment):
  the overflow policy may drop them;
- **kept** items: control messages (``bytes``: ``subscribed``, ``ack``, ``error``,
  ``gap``...) and events replayed for a resumed subscription. The policy never drops
  them. The resumed subscription itself pauses at half the bounds
  (:meth:`ClientQueue.half_full`), so history holds its backlog, not the queue.

The bounds (``max_items`` items, ``max_bytes`` bytes) always hold, except that one item
larger than ``max_bytes`` still travels alone through an empty queue. What happens to an
item that does not fit:

=============== ============================================ ===============================
policy          a live item                                  a kept item
=============== ============================================ ===============================
``disconnect``  overflow: the client is cut off              overflow
``drop_oldest`` the oldest live items make room; if kept     the oldest live items make
                items alone fill the queue, the new item is  room; overflow if kept items
                dropped                                      alone fill it
``latest_only`` every queued live event is replaced by the   as ``drop_oldest``
                newest; dropped if kept items fill the queue
=============== ============================================ ===============================

*Overflow* closes the queue (:attr:`ClientQueue.overflowed`); the transport shell then
disconnects the client, which resumes from history. Every event the policy drops is
counted in :attr:`ClientQueue.dropped` and returned by the call that dropped it, so the
shell counts metrics once per decision, not per event.

>>> from streams import Event
>>> q = ClientQueue(max_items=2, max_bytes=1000, policy="drop_oldest")
>>> a, b, c = (Event.create(i, id=str(i)) for i in range(3))
>>> q.offer_live((a,), 10), q.offer_kept(b'{"op":"ack"}', 12), q.offer_live((b, c), 20)
(0, 0, 1)
>>> [type(i).__name__ for i in q.take_all()], q.dropped
(['bytes', 'tuple'], 1)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from streams import Event, OverflowPolicy

from .framing import Item, count_events

__all__ = ["LOSSY", "ClientQueue"]

LOSSY = frozenset({OverflowPolicy.DROP_OLDEST, OverflowPolicy.LATEST_ONLY})
"""Policies that drop live events instead of disconnecting the client."""

_POLICIES = frozenset({OverflowPolicy.DISCONNECT, *LOSSY})


def _live(item: Item) -> bool:
    """Live segments are tuples; control messages (bytes) and replayed events are kept."""
    return isinstance(item, tuple)


class ClientQueue:
    """A client's ordered queue of live and kept items within item and byte bounds.

    Sans-I/O: the shell offers items, takes everything at once to write, and reads
    :attr:`overflowed` to disconnect. ``events`` and ``bytes`` are kept up to date so the
    shell never walks the queue to count.
    """

    __slots__ = (
        "_items",
        "bytes",
        "closed",
        "dropped",
        "error",
        "events",
        "idle",
        "live",
        "max_bytes",
        "max_items",
        "overflowed",
        "policy",
    )

    def __init__(
        self,
        max_items: int = 1000,
        max_bytes: int = 1 << 20,
        policy: OverflowPolicy | str = OverflowPolicy.DISCONNECT,
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.policy = OverflowPolicy.DISCONNECT
        self.set_policy(policy)
        self._items: deque[tuple[Item, int]] = deque()
        self.bytes = 0
        self.events = 0  # events queued (segments count each of theirs)
        self.live = 0  # live items queued
        self.dropped = 0  # events the policy dropped, ever
        self.closed = False
        self.overflowed = False
        self.error: BaseException | None = None
        # Empty and open: the one attribute the hub reads per caught-up client per event
        # (kept in step by every change, so no call is needed to ask).
        self.idle = True

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return (item for item, _ in self._items)

    def set_policy(self, policy: OverflowPolicy | str) -> None:
        """Apply ``policy`` to what is offered from now on."""
        p = OverflowPolicy(policy)
        if p not in _POLICIES:
            raise ValueError(f"not a client overflow policy: {p.value}")
        self.policy = p

    # -- bounds ---------------------------------------------------------------------
    def fits(self, size: int) -> bool:
        """True when one more item of ``size`` bytes keeps the queue within its bounds
        (an empty queue takes any one item)."""
        n = len(self._items)
        return not n or (n < self.max_items and self.bytes + size <= self.max_bytes)

    def half_full(self, size: int) -> bool:
        """A resumed subscription fills at most half the queue, leaving room for the rest.

        >>> q = ClientQueue(4, 100)
        >>> q.offer_kept(b"x" * 10, 10), q.half_full(10), q.half_full(41)
        (0, False, True)
        """
        n = len(self._items)
        return bool(n) and (
            n >= max(1, self.max_items // 2) or self.bytes + size > self.max_bytes // 2
        )

    # -- offers ---------------------------------------------------------------------
    def offer_live(self, segment: tuple[Event, ...], size: int) -> int:
        """Queue a live segment of ``size`` bytes under the policy; returns the number of
        events this offer dropped (queued ones, or the segment's own)."""
        if self.closed:
            return 0
        policy = self.policy
        dropped = 0
        if policy is OverflowPolicy.LATEST_ONLY and (self.live or len(segment) > 1):
            dropped = self._drop_live(everything=True)
            if len(segment) > 1:
                dropped += len(segment) - 1
                self.dropped += len(segment) - 1
                segment = segment[-1:]
                size = len(segment[0].encode())
        if not self.fits(size):
            if policy is OverflowPolicy.DISCONNECT:
                return self._overflow(len(segment))
            dropped += self._drop_live(size=size)
            if not self.fits(size):  # kept items alone fill the queue
                self.dropped += len(segment)
                return dropped + len(segment)
        self._append(segment, size, len(segment))
        self.live += 1
        return dropped

    def offer_kept(self, item: bytes | Event, size: int) -> int:
        """Queue a control message or a replayed event, which no policy drops: live items
        make room for it under a lossy policy; if it still does not fit, the queue
        overflows. Returns the number of live events dropped to make room."""
        if self.closed:
            return 0
        dropped = 0
        if not self.fits(size):
            if self.policy in LOSSY:
                dropped = self._drop_live(size=size)
            if not self.fits(size):
                return dropped + self._overflow(count_events(item))
        self._append(item, size, 1 if isinstance(item, Event) else 0)
        return dropped

    # -- taking and closing ---------------------------------------------------------
    def take_all(self) -> list[Item]:
        """Everything queued, oldest first; the queue is empty afterwards."""
        items = [item for item, _ in self._items]
        self._items.clear()
        self.bytes = self.events = self.live = 0
        self.idle = not self.closed
        return items

    def clear(self) -> None:
        """Forget everything queued (the client went away)."""
        self.take_all()

    def close(self, error: BaseException | None = None) -> None:
        """No more items; the writer sends what is queued, then ends (or fails with
        ``error``)."""
        if not self.closed:
            self.closed = True
            self.idle = False
            self.error = error

    # -- internals ------------------------------------------------------------------
    def _append(self, item: Item, size: int, events: int) -> None:
        self._items.append((item, size))
        self.idle = False
        self.bytes += size
        self.events += events

    def _overflow(self, refused: int) -> int:
        self.overflowed = True
        self.dropped += refused
        self.close()
        return refused

    def _drop_live(self, size: int = 0, everything: bool = False) -> int:
        """Drop the oldest live items until ``size`` more bytes fit (or all of them);
        kept items stay, in order. Returns the events dropped."""
        if not self.live:
            return 0
        out: deque[tuple[Item, int]] = deque()
        dropped = 0
        n = len(self._items)
        for item, s in self._items:
            if _live(item) and (
                everything or (n and (n >= self.max_items or self.bytes + size > self.max_bytes))
            ):
                k = count_events(item)
                dropped += k
                self.events -= k
                self.bytes -= s
                self.live -= 1
                n -= 1
            else:
                out.append((item, s))
        self._items = out
        self.idle = not out and not self.closed
        self.dropped += dropped
        return dropped

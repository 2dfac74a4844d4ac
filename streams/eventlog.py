"""The MemoryBroker's log: rooms, positions, retention and eviction. No delivery here.

One log for all subjects, ordered by offset, stored as one bounded ring per subject
(:class:`Room`), so a busy room only ever evicts its own history and that eviction
costs nothing. Global limits (events, bytes, age) evict the oldest events across rooms
in amortized batches (down to 90% of the limit, not one event per publish).

What a room keeps depends on whether bytes are bounded. Bounding bytes means encoding
every event at publish anyway, so the room then keeps only those bytes (about 1.3x the
encoded size per event, against about 4x for the event object plus its cached
encoding) and replay rebuilds events from them (:meth:`Event._restore`, no
re-validation, the bytes stay the rebuilt event's encoding). Without a byte bound the
room keeps the event objects, and publishing never encodes.
"""

from __future__ import annotations

import heapq
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Final

import orjson

from .broker import GapError, Position, Retention
from .event import Event, EventError, _set_pos, _set_subject
from .subjects import match, validate_subject

__all__ = ["NO_LIMIT", "EventLog", "Room"]

NO_LIMIT: Final = sys.maxsize  # a limit that is never reached: "unbounded on this axis"
_MAX_EVICTED_SUBJECTS: Final = 100_000
_TRIM_TO: Final = 0.9  # global limits evict down to 90% so eviction is amortized
_new_position = tuple.__new__  # Position(epoch, offset) without NamedTuple.__new__'s call


def _check_encodable(event: Event) -> None:
    try:
        orjson.dumps(event.data)
        if event.extensions:  # encoded too: a bad value must fail before any is stored
            orjson.dumps(event.extensions)
    except TypeError as exc:
        raise EventError("data", f"not JSON-serializable: {exc}") from None


# What a room keeps per event: the Event, or its encoded bytes when bytes are bounded.
Entry = Event | bytes
# A retained entry located in the log: (offset, subject, entry). Offsets are unique, so
# tuples of these order by offset alone and heapq.merge needs no key function.
Located = tuple[int, str, Entry]


class Room:
    """One subject's retained history: offsets and entries in two parallel rings.

    Offsets live in their own ring so that ordering, eviction and gap checks never
    look inside an entry (which may be an Event or bytes).
    """

    __slots__ = ("entries", "maxlen", "offsets", "subject")

    def __init__(self, subject: str, maxlen: int | None) -> None:
        self.subject = subject  # the one interned copy every stored event points at
        self.maxlen = maxlen
        self.offsets: deque[int] = deque(maxlen=maxlen)
        self.entries: deque[Entry] = deque(maxlen=maxlen)

    def __len__(self) -> int:
        return len(self.offsets)

    def tail(self, after: int) -> list[Located]:
        """Entries with offsets after ``after``, oldest first; reads from the newest end
        (deques iterate in O(1) per step but index in O(n)), so resuming near the head
        costs what is replayed, not the whole room."""
        subject = self.subject
        out: list[Located] = []
        for off, entry in zip(reversed(self.offsets), reversed(self.entries), strict=True):
            if off <= after:
                break
            out.append((off, subject, entry))
        out.reverse()
        return out

    def last(self, n: int) -> list[Located]:
        """The newest ``n`` entries, oldest first."""
        subject = self.subject
        newest = islice(zip(reversed(self.offsets), reversed(self.entries), strict=True), n)
        out = [(off, subject, entry) for off, entry in newest]
        out.reverse()
        return out

    def drop_oldest(self) -> tuple[int, Entry]:
        return self.offsets.popleft(), self.entries.popleft()


class EventLog:
    """Positions, rooms and retention for one :class:`~streams.memory.MemoryBroker`."""

    def __init__(self, retention: Retention, clock: Callable[[], float]) -> None:
        self.retention = r = retention
        self._clock = clock
        self._max_events = NO_LIMIT if r.max_events is None else r.max_events
        self._max_bytes = NO_LIMIT if r.max_bytes is None else r.max_bytes
        self._max_age = r.max_age or 0.0
        self.packed = r.max_bytes is not None  # rooms keep encoded bytes, not objects
        self._timed = bool(r.max_age)
        self._accounting = self.packed or self._timed  # every append updates bytes/times
        self.epoch = os.urandom(4).hex()
        self.offset = 0
        self.head: Position = Position(self.epoch, 0)  # the newest appended position
        self.rooms: dict[str, Room] = {}
        self.retained = 0
        self.bytes = 0
        self.times: deque[tuple[int, float]] = deque()  # (offset, publish time) with max_age
        self._evicted: dict[str, int] = {}  # subject -> highest offset evicted
        self._evicted_floor = 0  # applies to every subject once _evicted was folded
        self.closed = False

    # -- appending ------------------------------------------------------------------
    def room(self, subject: str) -> Room:
        """The room of ``subject``, created (and the subject validated) on first use."""
        room = self.rooms.get(subject)
        if room is None:
            if self.closed:
                raise RuntimeError("broker is closed")
            validate_subject(subject)
            room = self.rooms[subject] = Room(subject, self.retention.max_per_subject)
        return room

    def append(self, subject: str, event: Event) -> Event:
        """Stamp ``event`` with the next position and keep it; returns the stamped event
        (``event`` itself when fresh, else a copy); its position is then :attr:`head`.

        The one place events enter the log (the hot path: kept flat on purpose). When
        bytes are bounded the event is encoded first, so an event that cannot be
        encoded raises :class:`~streams.EventError` before anything is stored. The
        position is an attribute, not a returned pair: building and unpacking a tuple
        per publish costs ~150 instructions (callgrind), 1.5% of a publish.
        """
        room = self.rooms.get(subject)
        if room is None:
            room = self.room(subject)
        subject = room.subject
        off = self.offset + 1
        pos: Position = _new_position(Position, (self.epoch, off))
        # Event._stamp's in-place case, inline: a Python call here costs ~3% of a publish
        # (callgrind). Anything not fresh (stamped, received or encoded) gets its copy.
        if event._pos is None and event._seq is None and event._json is None:
            if event.subject is not subject:
                _set_subject(event, subject)
            _set_pos(event, pos)
        else:
            event = event._stamp(subject, pos)
        entry: Entry = event.encode() if self.packed else event
        self.offset = off
        self.head = pos
        offsets = room.offsets
        if len(offsets) == room.maxlen:  # the ring drops this subject's oldest entry
            self._evicted[subject] = offsets[0]
            if self.packed:
                self.bytes -= len(room.entries[0])  # type: ignore[arg-type]
        else:
            self.retained += 1
        offsets.append(off)
        room.entries.append(entry)
        if self._accounting or self.retained > self._max_events:
            self._hold_limits(off, entry)
        return event

    def extend(self, subject: str, events: list[Event]) -> tuple[list[Position], list[Event]]:
        """:meth:`append` for a batch (consecutive positions), all or nothing: when bytes
        are bounded, every event is checked to be encodable before any is stored.

        Returns the positions and the stamped events. One loop for the whole batch, not
        a call per event: this is what makes a batch cheaper than repeated appends.
        """
        room = self.room(subject)
        if self.packed:
            for event in events:
                _check_encodable(event)
        subject, epoch, packed = room.subject, self.epoch, self.packed
        offsets, entries, maxlen = room.offsets, room.entries, room.maxlen
        positions: list[Position] = []
        stamped: list[Event] = []
        for event in events:
            off = self.offset + 1
            pos: Position = _new_position(Position, (epoch, off))
            if event._pos is None and event._seq is None and event._json is None:
                if event.subject is not subject:
                    _set_subject(event, subject)
                _set_pos(event, pos)
            else:
                event = event._stamp(subject, pos)
            entry: Entry = event.encode() if packed else event
            self.offset = off
            if len(offsets) == maxlen:  # the ring drops this subject's oldest entry
                self._evicted[subject] = offsets[0]
                if packed:
                    self.bytes -= len(entries[0])  # type: ignore[arg-type]
            else:
                self.retained += 1
            offsets.append(off)
            entries.append(entry)
            if self._accounting or self.retained > self._max_events:
                self._hold_limits(off, entry)
            positions.append(pos)
            stamped.append(event)
        if positions:
            self.head = positions[-1]
        return positions, stamped

    # -- retention ------------------------------------------------------------------
    def _hold_limits(self, off: int, entry: Entry) -> None:
        """Account the entry just kept, then evict what exceeds count, bytes or age."""
        if self.packed:
            self.bytes += len(entry)  # type: ignore[arg-type]
        if self._timed:
            self.times.append((off, self._clock()))
            self.expire()
            if len(self.times) > 2 * self.retained + 1024:
                self._prune_times()
        if self.retained > self._max_events or self.bytes > self._max_bytes:
            self._trim()

    def _trim(self) -> None:
        """Evict the oldest events down to 90% of each limit that is exceeded, always
        keeping the newest (an event larger than the byte limit is still retained)."""
        over_count = self.retained > self._max_events
        over_bytes = self.bytes > self._max_bytes
        max_count = int(self._max_events * _TRIM_TO) if over_count else NO_LIMIT
        max_bytes = int(self._max_bytes * _TRIM_TO) if over_bytes else NO_LIMIT
        self._evict_oldest(lambda _: self.retained > max_count or self.bytes > max_bytes, keep=1)

    def _evict_oldest(self, more: Callable[[int], bool], keep: int = 0) -> None:
        """Evict globally oldest events while ``more(offset_of_oldest)`` holds."""
        heap = [(room.offsets[0], room.subject) for room in self.rooms.values() if room.offsets]
        heapq.heapify(heap)
        while heap and self.retained > keep and more(heap[0][0]):
            off, subject = heap[0]
            room = self.rooms[subject]
            _, entry = room.drop_oldest()
            self.retained -= 1
            if self.packed:
                self.bytes -= len(entry)  # type: ignore[arg-type]
            self._evicted[subject] = off
            if room.offsets:
                heapq.heapreplace(heap, (room.offsets[0], subject))
            else:
                heapq.heappop(heap)

    def _prune_times(self) -> None:
        """Forget publish times of events already evicted by other limits (amortized O(1))."""
        live = {off for room in self.rooms.values() for off in room.offsets}
        self.times = deque(t for t in self.times if t[0] in live)

    def expire(self) -> None:
        """Evict events older than ``max_age`` (a no-op without an age limit)."""
        times = self.times
        if not times:
            return
        cutoff = self._clock() - self._max_age
        if times[0][1] >= cutoff:
            return
        upto = 0
        while times and times[0][1] < cutoff:
            upto = times.popleft()[0]
        self._evict_oldest(lambda off: off <= upto)

    def purge(self) -> None:
        """Drop all history and start a new epoch (old positions now report a gap)."""
        for room in self.rooms.values():
            room.offsets.clear()
            room.entries.clear()
        self.retained = 0
        self.bytes = 0
        self.times.clear()
        self._evicted.clear()
        self._evicted_floor = 0
        self.epoch = os.urandom(4).hex()
        self.offset = 0
        self.head = Position(self.epoch, 0)

    def close(self) -> None:
        self.closed = True
        self.rooms.clear()

    # -- reading --------------------------------------------------------------------
    def earliest(self) -> Position | None:
        self.expire()
        heads = [room.offsets[0] for room in self.rooms.values() if room.offsets]
        return Position(self.epoch, min(heads)) if heads else None

    def _matching(self, pattern: str) -> list[Room]:
        return [room for subject, room in self.rooms.items() if match(pattern, subject)]

    def read(self, pattern: str, after: int) -> Iterator[tuple[int, Event]]:
        """Retained (offset, event) pairs matching ``pattern`` after ``after``, in log
        order. Lazy: a replay that stops early rebuilds no more events than it used."""
        tails = [room.tail(after) for room in self._matching(pattern)]
        merged = heapq.merge(*tails) if len(tails) > 1 else iter(tails[0] if tails else ())
        return self._events(merged)

    def last(self, pattern: str, n: int) -> list[Event]:
        """The newest ``n`` retained events matching ``pattern``, oldest first."""
        tails = [room.last(n) for room in self._matching(pattern)]
        newest = list(heapq.merge(*tails))[-n:]
        return [event for _, event in self._events(iter(newest))]

    def _events(self, located: Iterator[Located]) -> Iterator[tuple[int, Event]]:
        if not self.packed:
            for off, _, entry in located:
                yield off, entry  # type: ignore[misc]
            return
        epoch, restore = self.epoch, Event._restore
        for off, subject, entry in located:
            pos: Position = _new_position(Position, (epoch, off))
            yield off, restore(entry, subject, pos)  # type: ignore[arg-type]

    # -- gaps -----------------------------------------------------------------------
    def check_since(self, pattern: str, since: Position) -> None:
        """Raise :class:`GapError` unless everything matching after ``since`` is retained."""
        self.expire()
        if since.epoch != self.epoch:
            raise GapError(since, self._complete_from(pattern), "epoch changed (history lost)")
        if since.offset > self.offset:
            raise GapError(since, self._complete_from(pattern), "position is ahead of the log")
        if self._last_evicted(pattern) > since.offset:
            raise GapError(since, self._complete_from(pattern), "events were evicted")

    def _last_evicted(self, pattern: str) -> int:
        """The newest evicted offset of any subject matching ``pattern`` (0 if none)."""
        if len(self._evicted) > _MAX_EVICTED_SUBJECTS:
            # Fold into one conservative floor: may report a gap a little early, never late.
            self._evicted_floor = max(self._evicted.values())
            self._evicted.clear()
        matching = [off for subj, off in self._evicted.items() if match(pattern, subj)]
        return max([self._evicted_floor, *matching])

    def _complete_from(self, pattern: str) -> Position | None:
        """The first position from which this pattern's history is complete.

        Retained events of quiet subjects may be older (a busy subject evicts only its
        own history), but resuming before this point would meet a hole again.
        """
        if not self.offset:
            return None
        return Position(self.epoch, self._last_evicted(pattern) + 1)

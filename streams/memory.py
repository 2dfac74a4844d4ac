"""MemoryBroker: the embedded, in-process default broker.

One log for all subjects, ordered by offset, stored as one bounded ring per subject
(``deque(maxlen=max_per_subject)``), so a busy room only ever evicts its own history and
that eviction costs nothing. Global limits (events, bytes, age) evict the oldest events
across rooms in amortized batches. Subscribers are indexed by pattern so a publish
costs O(matching subscribers). Everything runs on the caller's thread (normally the
asyncio loop): no locks and no thread hops on the hot path.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.observer import AutoDetachObserver
from reactivex.scheduler import CurrentThreadScheduler

from .broker import GapError, Position, Retention
from .event import Event, EventError
from .event import set_position_in_place as _set_position
from .event import set_subject_in_place as _set_subject
from .subjects import SubjectIndex, match, validate_pattern, validate_subject

__all__ = ["MemoryBroker"]

_MAX_EVICTED_SUBJECTS = 100_000
_UNBOUNDED = sys.maxsize
_TRIM_TO = 0.9  # global limits evict down to 90% so eviction is amortized, not per publish
_new_position = tuple.__new__

_Room = deque[Event]  # every stored event carries its (epoch, offset) in ``_pos``


def _ignore(_: Event) -> None:
    return None


def _check_encodable(event: Event) -> None:
    try:
        orjson.dumps(event.data)
    except TypeError as exc:
        raise EventError("data", f"not JSON-serializable: {exc}") from None


def _tail(room: _Room, after: int) -> list[Event]:
    """The events of ``room`` with offsets after ``after`` (rooms are in offset order)."""
    out: list[Event] = []
    for event in reversed(room):
        if _off(event) <= after:
            break
        out.append(event)
    out.reverse()
    return out


def _off(event: Event) -> int:
    return event._pos[1]  # type: ignore[index]


class _Subscription:
    """One subscriber. ``last`` guards duplicates where a subscription may be newer than
    the event being delivered: replay catch-up, queued re-entrant publishes, batches."""

    __slots__ = ("key", "last", "observer", "on_next")

    def __init__(self, observer: abc.ObserverBase[Event], last: int) -> None:
        self.observer = observer
        # AutoDetachObserver.on_next only re-checks "stopped"; the broker guarantees that
        # itself (dispose sets ``last`` past every offset), so call the inner function.
        inner = observer._on_next if type(observer) is AutoDetachObserver else None
        self.on_next: Callable[[Event], None] = inner or observer.on_next
        self.last = last
        self.key = 0

    def stop(self) -> None:
        """Deliver nothing more, even from a dispatch loop already under way."""
        self.last = _UNBOUNDED
        self.on_next = _ignore


class MemoryBroker:
    """The embedded broker.

    Publishing an event that was never published stamps it in place with its subject
    and position (``event.sequence``); an already published event is copied.

    >>> b = MemoryBroker()
    >>> got = []
    >>> d = b.subscribe("chat.*.msg").subscribe(lambda e: got.append(e.data))
    >>> p = b.publish("chat.lobby.msg", {"text": "hi"})
    >>> got, p.offset
    ([{'text': 'hi'}], 1)
    """

    def __init__(
        self, retention: Retention | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.retention = r = retention or Retention()
        self._clock = clock
        self._max_events = r.max_events if r.max_events is not None else _UNBOUNDED
        self._max_bytes = r.max_bytes
        self._max_age = r.max_age
        self._accounting = r.max_bytes is not None or bool(r.max_age)
        self._epoch = os.urandom(4).hex()
        self._offset = 0
        self._rooms: dict[str, _Room] = {}
        self._retained = 0
        self._bytes = 0
        self._times: deque[tuple[int, float]] = deque()
        self._evicted: dict[str, int] = {}  # subject -> highest offset evicted
        self._evicted_floor = 0  # applies to every subject once _evicted was folded
        self._index: SubjectIndex[_Subscription] = SubjectIndex()
        self._routes = self._index._cache  # subject -> subscriptions, kept by the index
        self._dispatching = False
        self._pending: deque[tuple[str, int, Event]] = deque()
        self._closed = False
        self.failed_subscribers = 0

    # -- positions ----------------------------------------------------------------
    @property
    def epoch(self) -> str:
        return self._epoch

    def latest(self) -> Position | None:
        return Position(self._epoch, self._offset) if self._offset else None

    async def last_position(self) -> Position:
        """Where the log ends now (offset 0 when empty); see :class:`streams.Broker`."""
        return Position(self._epoch, self._offset)

    def earliest(self) -> Position | None:
        self._expire()
        heads = [_off(room[0]) for room in self._rooms.values() if room]
        return Position(self._epoch, min(heads)) if heads else None

    def __len__(self) -> int:
        return self._retained

    @property
    def subscriber_count(self) -> int:
        return len(self._index)

    @property
    def published(self) -> int:
        """Events published in this epoch."""
        return self._offset

    # -- publishing ---------------------------------------------------------------
    def publish(self, subject: str, event: Event | Any) -> Position:
        """Append to the log and deliver to matching subscribers; returns the position.

        ``event`` may be an :class:`Event` or any JSON-serializable value (wrapped).
        This is the hot path: it is kept flat on purpose.
        """
        room = self._rooms.get(subject)
        if room is None:
            room = self._new_room(subject)
        if event.__class__ is not Event:
            event = event if isinstance(event, Event) else Event.create(event)
        self._offset = off = self._offset + 1
        pos: Position = _new_position(Position, (self._epoch, off))
        if event._pos is None and event._seq is None and event._json is None:
            if event.subject != subject:
                _set_subject(event, subject)
            _set_position(event, pos)
        else:
            event = event.stamped(subject, pos)
        if len(room) == room.maxlen:  # the ring drops this subject's oldest event
            head = room[0]
            self._evicted[subject] = head._pos[1]  # type: ignore[index]
            if self._max_bytes is not None:
                self._bytes -= len(head.encode())
        else:
            self._retained += 1
        room.append(event)
        if self._accounting or self._retained > self._max_events:
            self._enforce(event)
        subs = self._routes.get(subject)
        if subs is None:
            subs = self._index.lookup(subject)
        if not subs:
            return pos
        if self._dispatching:
            self._pending.append((subject, off, event))
            return pos
        # Dispatch inline (the common case); re-entrant publishes from inside a
        # subscriber are queued above and drained here, so every subscriber sees
        # events in log order.
        self._dispatching = True
        try:
            # No duplicate guard needed here: every subscription in ``subs`` existed
            # before ``off`` was assigned, and a disposed one has a no-op ``on_next``.
            for sub in subs:
                try:
                    sub.on_next(event)
                except Exception as exc:  # a faulty consumer harms nobody else
                    self._drop(sub, exc)
            if self._pending:
                self._drain_pending()
        finally:
            self._dispatching = False
        return pos

    def publish_many(self, subject: str, events: Iterable[Event | Any]) -> list[Position]:
        """Publish a batch to one subject; same result as repeated :meth:`publish`, cheaper.

        Positions are consecutive. Subscribers receive the batch in order (the
        ingest endpoint and batching sinks use this).
        """
        room = self._rooms.get(subject)
        if room is None:
            room = self._new_room(subject)
        events = [e if isinstance(e, Event) else Event.create(e) for e in events]
        if self._max_bytes is not None:  # encoding happens below: fail before storing any
            for event in events:
                _check_encodable(event)
        epoch = self._epoch
        positions: list[Position] = []
        batch: list[Event] = []
        maxlen = room.maxlen
        evicted = self._evicted
        for event in events:
            self._offset = off = self._offset + 1
            pos: Position = _new_position(Position, (epoch, off))
            if event._pos is None and event._seq is None and event._json is None:
                if event.subject != subject:
                    _set_subject(event, subject)
                _set_position(event, pos)
            else:
                event = event.stamped(subject, pos)
            if len(room) == maxlen:
                head = room[0]
                evicted[subject] = head._pos[1]  # type: ignore[index]
                if self._max_bytes is not None:
                    self._bytes -= len(head.encode())
            else:
                self._retained += 1
            room.append(event)
            if self._accounting:
                self._enforce(event)
            positions.append(pos)
            batch.append(event)
        if self._retained > self._max_events:
            self._enforce(batch[-1], count_bytes=False)
        subs = self._index.lookup(subject)
        if not subs or not batch:
            return positions
        if self._dispatching:
            self._pending.extend((subject, _off(e), e) for e in batch)
            return positions
        self._dispatching = True
        try:
            for sub in subs:
                for event in batch:
                    off = event._pos[1]  # type: ignore[index]
                    if off > sub.last:
                        sub.last = off
                        try:
                            sub.on_next(event)
                        except Exception as exc:
                            self._drop(sub, exc)
                            break
            if self._pending:
                self._drain_pending()
        finally:
            self._dispatching = False
        return positions

    async def apublish(self, subject: str, event: Event | Any) -> Position:
        return self.publish(subject, event)

    async def apublish_many(self, subject: str, events: Sequence[Event | Any]) -> list[Position]:
        return self.publish_many(subject, events)

    def _new_room(self, subject: str) -> _Room:
        if self._closed:
            raise RuntimeError("broker is closed")
        validate_subject(subject)
        room: _Room = deque(maxlen=self.retention.max_per_subject)
        self._rooms[subject] = room
        return room

    def _drain_pending(self) -> None:
        """Deliver events that subscribers published while being delivered to, in order."""
        pending = self._pending
        while pending:
            subject, off, event = pending.popleft()
            for sub in self._index.lookup(subject):
                if off > sub.last:
                    sub.last = off
                    try:
                        sub.on_next(event)
                    except Exception as exc:
                        self._drop(sub, exc)

    def _drop(self, sub: _Subscription, exc: Exception) -> None:
        self.failed_subscribers += 1
        sub.stop()
        self._index.remove(sub.key)
        with contextlib.suppress(Exception):  # the observer is already broken
            sub.observer.on_error(exc)

    # -- retention ----------------------------------------------------------------
    def _enforce(self, event: Event, count_bytes: bool = True) -> None:
        if self._max_bytes is not None and count_bytes:
            self._bytes += len(event.encode())
        if self._max_age and count_bytes:
            self._times.append((self._offset, self._clock()))
            self._expire()
            if len(self._times) > 2 * self._retained + 1024:
                self._prune_times()
        over_count = self._retained > self._max_events
        over_bytes = self._max_bytes is not None and self._bytes > self._max_bytes
        if over_count or over_bytes:
            max_count = int(self._max_events * _TRIM_TO) if over_count else _UNBOUNDED
            max_bytes = int((self._max_bytes or 0) * _TRIM_TO) if over_bytes else _UNBOUNDED
            self._evict_oldest(
                lambda _: self._retained > max_count or self._bytes > max_bytes, keep=1
            )

    def _evict_oldest(self, more: Callable[[int], bool], keep: int = 0) -> None:
        """Evict globally oldest events while ``more(offset_of_oldest)`` holds."""
        heap = [(_off(room[0]), subject) for subject, room in self._rooms.items() if room]
        heapq.heapify(heap)
        while heap and self._retained > keep and more(heap[0][0]):
            off, subject = heap[0]
            room = self._rooms[subject]
            event = room.popleft()
            self._retained -= 1
            if self._max_bytes is not None:
                self._bytes -= len(event.encode())
            self._evicted[subject] = off
            if room:
                heapq.heapreplace(heap, (_off(room[0]), subject))
            else:
                heapq.heappop(heap)

    def _prune_times(self) -> None:
        """Forget publish times of events already evicted by other limits (amortized O(1))."""
        live = {_off(event) for room in self._rooms.values() for event in room}
        self._times = deque(t for t in self._times if t[0] in live)

    def _expire(self) -> None:
        times = self._times
        if not times or not self._max_age:
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
        for room in self._rooms.values():
            room.clear()
        self._retained = 0
        self._bytes = 0
        self._times.clear()
        self._evicted.clear()
        self._evicted_floor = 0
        self._epoch = os.urandom(4).hex()
        self._offset = 0
        for sub in self._index.values():
            sub.last = 0

    # -- reading ------------------------------------------------------------------
    def _matching_rooms(self, pattern: str) -> list[_Room]:
        return [room for subject, room in self._rooms.items() if match(pattern, subject)]

    def _entries(self, pattern: str, after: int) -> list[tuple[int, Event]]:
        """Retained (offset, event) pairs matching ``pattern`` after ``after``, in log order.

        Each room is read from its newest end back to ``after``, so resuming near the
        head costs what is replayed, not the whole retained history.
        """
        tails = [_tail(room, after) for room in self._matching_rooms(pattern)]
        merged = heapq.merge(*tails, key=_off) if len(tails) > 1 else (tails[0] if tails else [])
        return [(_off(e), e) for e in merged]

    def _check_since(self, pattern: str, since: Position) -> None:
        self._expire()
        if since.epoch != self._epoch:
            raise GapError(since, self._complete_from(pattern), "epoch changed (history lost)")
        if since.offset > self._offset:
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
        if not self._offset:
            return None
        return Position(self._epoch, self._last_evicted(pattern) + 1)

    def history(
        self, pattern: str, since: Position | str | None = None, limit: int | None = None
    ) -> list[Event]:
        """Retained events matching ``pattern`` after ``since`` (oldest first).

        Raises :class:`GapError` if events after ``since`` were evicted.
        """
        validate_pattern(pattern)
        self._expire()
        start = 0
        if since is not None:
            since = Position.parse(since) if isinstance(since, str) else since
            self._check_since(pattern, since)
            start = since.offset
        events = [event for _, event in self._entries(pattern, start)]
        return events if limit is None else events[:limit]

    def last(self, pattern: str, n: int) -> list[Event]:
        """The newest ``n`` retained events matching ``pattern``, oldest first."""
        validate_pattern(pattern)
        self._expire()
        if n <= 0:
            return []
        tails = [list(room)[-n:] for room in self._matching_rooms(pattern)]
        return list(heapq.merge(*tails, key=_off))[-n:]

    def subscribe(self, pattern: str, since: Position | str | None = None) -> Observable[Event]:
        """A hot stream of events matching ``pattern``.

        With ``since``, first replays retained events after that position, then
        continues live with no gap and no duplicate. Fails with :class:`GapError`
        if events after ``since`` are no longer retained.
        """
        validate_pattern(pattern)
        pos = Position.parse(since) if isinstance(since, str) else since

        def on_subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if self._closed:
                observer.on_completed()
                return Disposable()
            if pos is not None:
                try:
                    self._check_since(pattern, pos)
                except GapError as gap:
                    observer.on_error(gap)
                    return Disposable()
            sub = _Subscription(observer, pos.offset if pos is not None else self._offset)

            def dispose() -> None:
                sub.stop()
                self._index.remove(sub.key)

            if pos is None:
                sub.key = self._index.add(pattern, sub)
                return Disposable(dispose)

            def replay(_: abc.SchedulerBase, __: Any = None) -> None:
                # Replay until caught up, then go live. The observer may publish while it
                # replays; everything runs on this thread, so once nothing newer is left
                # the subscription goes live without a gap.
                while sub.last < self._offset:
                    mark = self._offset
                    for off, event in self._entries(pattern, sub.last):
                        if off > mark or sub.last == _UNBOUNDED:
                            break
                        sub.last = off
                        observer.on_next(event)
                    if sub.last == _UNBOUNDED:
                        return
                    sub.last = mark
                if sub.last != _UNBOUNDED:
                    sub.key = self._index.add(pattern, sub)

            # On the current-thread trampoline, like reactivex's own sources: the downstream
            # chain (take(n), a server pausing a slow client) can dispose mid-replay.
            started = CurrentThreadScheduler.singleton().schedule(replay)
            return CompositeDisposable(started, Disposable(dispose))

        return Observable(on_subscribe)

    async def close(self) -> None:
        """Complete every subscriber; further publishes raise."""
        self._closed = True
        self._rooms.clear()
        subs = list(self._index.values())
        self._index = SubjectIndex()
        self._routes = self._index._cache
        for sub in subs:
            sub.stop()
            sub.observer.on_completed()

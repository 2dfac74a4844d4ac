"""MemoryBroker: the embedded, in-process default broker.

It joins two parts: the log (:mod:`streams.eventlog`: rooms, positions, retention,
eviction) and delivery (:mod:`streams.dispatch`: the subject index, subscriptions,
re-entrancy). This module adds the public API and replay-then-live subscriptions.
Everything runs on the caller's thread (normally the asyncio loop): no locks and no
thread hops on the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.scheduler import CurrentThreadScheduler

from .broker import GapError, Position, Retention
from .dispatch import STOPPED, Dispatcher, Subscription
from .event import Event
from .eventlog import EventLog
from .subjects import validate_pattern

__all__ = ["MemoryBroker"]


def _as_event(value: Event | Any) -> Event:
    return value if isinstance(value, Event) else Event.create(value)


class MemoryBroker:
    """The embedded broker.

    Publishing an event that was never published stamps it in place with its subject
    and position (``event.sequence``); an already published event is copied.

    History is kept within ``retention`` (:class:`~streams.Retention`). When it bounds
    bytes, events are encoded at publish and history keeps only their bytes: what
    :meth:`history`, :meth:`last` and replay return then are equal events rebuilt from
    those bytes (their ``data`` as JSON gives it back: a tuple comes back a list), not
    the published objects. Live subscribers always get the published object.

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
        self.retention = retention or Retention()
        self._log = EventLog(self.retention, clock)
        self._dispatch = Dispatcher()

    # -- positions ----------------------------------------------------------------
    @property
    def epoch(self) -> str:
        return self._log.epoch

    def latest(self) -> Position | None:
        log = self._log
        return Position(log.epoch, log.offset) if log.offset else None

    async def last_position(self) -> Position:
        """Where the log ends now (offset 0 when empty); see :class:`streams.Broker`."""
        return Position(self._log.epoch, self._log.offset)

    def earliest(self) -> Position | None:
        return self._log.earliest()

    def __len__(self) -> int:
        return self._log.retained

    @property
    def subscriber_count(self) -> int:
        return len(self._dispatch)

    @property
    def published(self) -> int:
        """Events published in this epoch."""
        return self._log.offset

    @property
    def failed_subscribers(self) -> int:
        """Subscribers dropped because their ``on_next`` raised."""
        return self._dispatch.failed

    @property
    def retained_bytes(self) -> int:
        """Encoded bytes of the retained events (0 unless ``retention`` bounds bytes)."""
        return self._log.bytes

    # -- publishing ---------------------------------------------------------------
    def publish(self, subject: str, event: Event | Any) -> Position:
        """Append to the log and deliver to matching subscribers; returns the position.

        ``event`` may be an :class:`Event` or any JSON-serializable value (wrapped).
        """
        if event.__class__ is not Event:
            event = _as_event(event)
        # Attribute then method, not methods bound once in ``__init__``: CPython 3.11
        # specializes ``self._log.append(...)`` but not a call through an instance
        # attribute holding a bound method (~300 instructions more per publish, callgrind).
        log = self._log
        event = log.append(subject, event)
        pos = log.head  # read before delivery: a subscriber publishing moves the head
        self._dispatch.deliver(subject, log.offset, event)
        return pos

    def publish_many(self, subject: str, events: Iterable[Event | Any]) -> list[Position]:
        """Publish a batch to one subject; same result as repeated :meth:`publish`, cheaper.

        Positions are consecutive. Subscribers receive the batch in order (the
        ingest endpoint and batching sinks use this).
        """
        batch = [e if isinstance(e, Event) else Event.create(e) for e in events]
        positions, stamped = self._log.extend(subject, batch)
        if positions:
            self._dispatch.deliver_batch(subject, positions[0][1], stamped)
        return positions

    async def apublish(self, subject: str, event: Event | Any) -> Position:
        return self.publish(subject, event)

    async def apublish_many(self, subject: str, events: Sequence[Event | Any]) -> list[Position]:
        return self.publish_many(subject, events)

    def purge(self) -> None:
        """Drop all history and start a new epoch (old positions now report a gap)."""
        self._log.purge()
        self._dispatch.rewind()

    # -- reading ------------------------------------------------------------------
    def history(
        self, pattern: str, since: Position | str | None = None, limit: int | None = None
    ) -> list[Event]:
        """Retained events matching ``pattern`` after ``since`` (oldest first).

        Raises :class:`GapError` if events after ``since`` were evicted.
        """
        validate_pattern(pattern)
        self._log.expire()
        start = 0
        if since is not None:
            since = Position.parse(since) if isinstance(since, str) else since
            self._log.check_since(pattern, since)
            start = since.offset
        events = [event for _, event in self._log.read(pattern, start)]
        return events if limit is None else events[:limit]

    def last(self, pattern: str, n: int) -> list[Event]:
        """The newest ``n`` retained events matching ``pattern``, oldest first."""
        validate_pattern(pattern)
        self._log.expire()
        return self._log.last(pattern, n) if n > 0 else []

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
            if self._log.closed:
                observer.on_completed()
                return Disposable()
            if pos is None:
                sub = Subscription(observer, self._log.offset)
                self._dispatch.add(pattern, sub)
                return Disposable(lambda: self._dispatch.remove(sub))
            return self._replay_then_live(pattern, pos, observer)

        return Observable(on_subscribe)

    def _replay_then_live(
        self, pattern: str, since: Position, observer: abc.ObserverBase[Event]
    ) -> abc.DisposableBase:
        try:
            self._log.check_since(pattern, since)
        except GapError as gap:
            observer.on_error(gap)
            return Disposable()
        sub = Subscription(observer, since.offset)

        def replay(_: abc.SchedulerBase, __: Any = None) -> None:
            # Replay until caught up, then go live. The observer may publish while it
            # replays; everything runs on this thread, so once nothing newer is left
            # the subscription goes live without a gap.
            log = self._log
            while sub.last < log.offset:
                mark = log.offset
                for off, event in log.read(pattern, sub.last):
                    if off > mark or sub.last == STOPPED:  # no property call per event
                        break
                    sub.last = off
                    observer.on_next(event)
                if sub.stopped:
                    return
                sub.last = mark
            if not sub.stopped:
                self._dispatch.add(pattern, sub)

        # On the current-thread trampoline, like reactivex's own sources: the downstream
        # chain (take(n), a server pausing a slow client) can dispose mid-replay.
        started = CurrentThreadScheduler.singleton().schedule(replay)
        return CompositeDisposable(started, Disposable(lambda: self._dispatch.remove(sub)))

    async def close(self) -> None:
        """Complete every subscriber; further publishes raise."""
        self._log.close()
        for sub in self._dispatch.close():
            sub.stop()
            sub.observer.on_completed()

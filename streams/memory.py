"""MemoryBroker: the embedded, in-process default broker.

One ordered log for all subjects with retention by total events, bytes, age and
events per subject; subscribers indexed by pattern so a publish costs
O(matching subscribers). Everything runs on the caller's thread (normally the
asyncio loop): there are no locks and no thread hops on the hot path.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from .broker import GapError, Position, Retention
from .event import Event
from .subjects import SubjectIndex, match, validate_pattern, validate_subject

__all__ = ["MemoryBroker"]

_Entry = tuple[int, Event, int, float]  # offset, event, size, monotonic publish time
_MAX_EVICTED_SUBJECTS = 100_000


class _Subscription:
    """One subscriber; ``last`` guards against duplicates between replay and live."""

    __slots__ = ("buffer", "key", "last", "observer")

    def __init__(self, observer: abc.ObserverBase[Event], last: int) -> None:
        self.observer = observer
        self.last = last
        self.key = 0
        self.buffer: list[tuple[int, Event]] | None = []  # live events held during replay


class MemoryBroker:
    """The embedded broker.

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
        self._clock = clock
        self._epoch = os.urandom(4).hex()
        self._offset = 0
        self._log: OrderedDict[int, _Entry] = OrderedDict()
        self._bytes = 0
        self._by_subject: dict[str, deque[int]] = {}
        self._evicted: dict[str, int] = {}  # subject -> highest offset evicted
        self._evicted_floor = 0  # applies to every subject once _evicted was folded
        self._index: SubjectIndex[_Subscription] = SubjectIndex()
        self._dispatching = False
        self._pending: deque[tuple[str, int, Event]] = deque()
        self._closed = False
        self.published = 0
        self.failed_subscribers = 0

    # -- positions ----------------------------------------------------------------
    @property
    def epoch(self) -> str:
        return self._epoch

    def latest(self) -> Position | None:
        return Position(self._epoch, self._offset) if self._offset else None

    def earliest(self) -> Position | None:
        self._expire()
        if not self._log:
            return None
        return Position(self._epoch, next(iter(self._log)))

    def __len__(self) -> int:
        return len(self._log)

    @property
    def subscriber_count(self) -> int:
        return len(self._index)

    # -- publishing ---------------------------------------------------------------
    def publish(self, subject: str, event: Event | Any) -> Position:
        """Append to the log and deliver to matching subscribers; returns the position.

        ``event`` may be an :class:`Event` or any JSON-serializable value (wrapped).
        """
        if self._closed:
            raise RuntimeError("broker is closed")
        if subject not in self._by_subject:
            validate_subject(subject)
            self._by_subject[subject] = deque()
        if not isinstance(event, Event):
            event = Event.create(event)
        self._offset = off = self._offset + 1
        event = event.stamped(subject, f"{self._epoch}-{off}")
        r = self.retention
        size = len(event.encode()) if r.max_bytes is not None else 0
        self._log[off] = (off, event, size, self._clock() if r.max_age else 0.0)
        self._bytes += size
        per = self._by_subject[subject]
        per.append(off)
        if r.max_per_subject is not None and len(per) > r.max_per_subject:
            self._evict(per[0])
        if (r.max_events is not None and len(self._log) > r.max_events) or (
            r.max_bytes is not None and self._bytes > r.max_bytes
        ):
            self._trim()
        elif r.max_age:
            self._expire()
        self.published += 1
        if self._dispatching:
            self._pending.append((subject, off, event))
        else:
            self._dispatch(subject, off, event)
        return Position(self._epoch, off)

    async def apublish(self, subject: str, event: Event | Any) -> Position:
        return self.publish(subject, event)

    def _dispatch(self, subject: str, off: int, event: Event) -> None:
        # Re-entrant publishes (a subscriber publishing) are queued so that every
        # subscriber sees events in log order.
        self._dispatching = True
        try:
            while True:
                for sub in self._index.lookup(subject):
                    if off > sub.last:
                        if sub.buffer is not None:
                            sub.buffer.append((off, event))
                            continue
                        sub.last = off
                        try:
                            sub.observer.on_next(event)
                        except Exception as exc:  # a faulty consumer harms nobody else
                            self._drop(sub, exc)
                if not self._pending:
                    return
                subject, off, event = self._pending.popleft()
        finally:
            self._dispatching = False

    def _drop(self, sub: _Subscription, exc: Exception) -> None:
        self.failed_subscribers += 1
        self._index.remove(sub.key)
        with contextlib.suppress(Exception):  # the observer is already broken
            sub.observer.on_error(exc)

    # -- retention ----------------------------------------------------------------
    def _evict(self, off: int) -> None:
        entry = self._log.pop(off, None)
        if entry is None:
            return
        _, event, size, _ = entry
        self._bytes -= size
        subject = event.subject or ""
        per = self._by_subject.get(subject)
        if per and per[0] == off:
            per.popleft()
        elif per:
            per.remove(off)
        self._evicted[subject] = off
        if len(self._evicted) > _MAX_EVICTED_SUBJECTS:
            # Fold into one conservative floor: may report a gap a little early, never late.
            self._evicted_floor = max(self._evicted.values())
            self._evicted.clear()

    def _trim(self) -> None:
        r = self.retention
        while self._log and (
            (r.max_events is not None and len(self._log) > r.max_events)
            or (r.max_bytes is not None and self._bytes > r.max_bytes)
        ):
            self._evict(next(iter(self._log)))
        if r.max_age:
            self._expire()

    def _expire(self) -> None:
        max_age = self.retention.max_age
        if not max_age or not self._log:
            return
        cutoff = self._clock() - max_age
        while self._log:
            first = next(iter(self._log.values()))
            if first[3] >= cutoff:
                break
            self._evict(first[0])

    def purge(self) -> None:
        """Drop all history and start a new epoch (old positions now report a gap)."""
        self._log.clear()
        self._bytes = 0
        for per in self._by_subject.values():
            per.clear()
        self._evicted.clear()
        self._evicted_floor = 0
        self._epoch = os.urandom(4).hex()
        self._offset = 0
        for sub in self._index.values():
            sub.last = 0

    # -- reading ------------------------------------------------------------------
    def _check_since(self, pattern: str, since: Position) -> None:
        self._expire()
        if since.epoch != self._epoch:
            raise GapError(since, self._earliest_for(pattern), "epoch changed (history lost)")
        if since.offset > self._offset:
            raise GapError(since, self._earliest_for(pattern), "position is ahead of the log")
        lost = self._evicted_floor > since.offset or any(
            off > since.offset and match(pattern, subj) for subj, off in self._evicted.items()
        )
        if lost:
            raise GapError(since, self._earliest_for(pattern), "events were evicted")

    def _earliest_for(self, pattern: str) -> Position | None:
        for off, event, _, _ in self._log.values():
            if match(pattern, event.subject or ""):
                return Position(self._epoch, off)
        return Position(self._epoch, self._offset + 1) if self._offset else None

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
        out: list[Event] = []
        for off, event, _, _ in self._log.values():
            if off > start and match(pattern, event.subject or ""):
                out.append(event)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def last(self, pattern: str, n: int) -> list[Event]:
        """The newest ``n`` retained events matching ``pattern``, oldest first."""
        validate_pattern(pattern)
        self._expire()
        out: list[Event] = []
        for _, event, _, _ in reversed(self._log.values()):
            if len(out) >= n:
                break
            if match(pattern, event.subject or ""):
                out.append(event)
        out.reverse()
        return out

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
            sub.key = self._index.add(pattern, sub)
            disposed = False
            if pos is not None:
                for off, event, _, _ in list(self._log.values()):
                    if disposed:
                        break
                    if off > sub.last and match(pattern, event.subject or ""):
                        sub.last = off
                        observer.on_next(event)
            # Deliver what went live during replay; anything published while we do
            # that lands in a fresh buffer, so the loop runs until it is empty.
            while sub.buffer and not disposed:
                held, sub.buffer = sub.buffer, []
                for off, event in held:
                    if off > sub.last:
                        sub.last = off
                        observer.on_next(event)
            sub.buffer = None

            def dispose() -> None:
                nonlocal disposed
                disposed = True
                self._index.remove(sub.key)

            return Disposable(dispose)

        return Observable(on_subscribe)

    async def close(self) -> None:
        """Complete every subscriber; further publishes raise."""
        self._closed = True
        subs = list(self._index.values())
        self._index = SubjectIndex()
        for sub in subs:
            sub.observer.on_completed()

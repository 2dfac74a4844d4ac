"""The MemoryBroker's delivery: the subject index, subscriptions and re-entrancy.

Subscribers are indexed by pattern (:class:`~streams.subjects.SubjectIndex`), so a
publish costs O(matching subscribers). Everything runs on the caller's thread (normally
the asyncio loop): no locks and no thread hops. A subscriber that publishes from inside
``on_next`` does not recurse: its event is queued and delivered once the current
delivery finishes, so every subscriber sees events in log order.
"""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from reactivex import abc
from reactivex.observer import AutoDetachObserver

from .event import Event
from .subjects import SubjectIndex

__all__ = ["STOPPED", "Dispatcher", "Subscription"]

STOPPED: Final = sys.maxsize  # a stopped subscription's ``last``: past every offset


def _ignore(_: Event) -> None:
    return None


def _direct_on_next(observer: abc.ObserverBase[Event]) -> Callable[[Event], None]:
    """The function that delivers to ``observer``.

    For reactivex's ``AutoDetachObserver`` (what ``Observable.subscribe(fn)`` makes) this
    is its private ``_on_next``: the public ``on_next`` only re-checks ``is_stopped``
    first, and the broker guarantees that itself (a stopped :class:`Subscription` has a
    no-op ``on_next``). Measured with timeit on the 2-core CI machine: public 100 ns vs
    private 40 ns per call, i.e. ~60 ns per delivery, ~2.5% of a publish to one
    subscriber and more with many. This is the one place that reaches into reactivex.
    """
    if type(observer) is AutoDetachObserver:
        inner: Callable[[Event], None] = observer._on_next
        return inner
    return observer.on_next


class Subscription:
    """One subscriber. ``last`` guards duplicates where a subscription may be newer than
    the event being delivered: replay catch-up, queued re-entrant publishes, batches."""

    __slots__ = ("key", "last", "observer", "on_next")

    def __init__(self, observer: abc.ObserverBase[Event], last: int) -> None:
        self.observer = observer
        self.on_next = _direct_on_next(observer)
        self.last = last
        self.key = 0

    @property
    def stopped(self) -> bool:
        return self.last == STOPPED

    def stop(self) -> None:
        """Deliver nothing more, even from a dispatch loop already under way."""
        self.last = STOPPED
        self.on_next = _ignore


class Dispatcher:
    """Delivers appended events to the subscriptions whose patterns match."""

    def __init__(self) -> None:
        self._index: SubjectIndex[Subscription] = SubjectIndex()
        self._resolved = self._index.resolved  # subject -> subscriptions, kept by the index
        self._dispatching = False
        self._pending: deque[tuple[str, int, Event]] = deque()
        self.failed = 0  # subscribers dropped because their on_next raised

    def __len__(self) -> int:
        return len(self._index)

    def matching(self, subject: str) -> tuple[Subscription, ...]:
        """The subscriptions an event on ``subject`` goes to."""
        subs = self._resolved.get(subject)
        return self._index.lookup(subject) if subs is None else subs

    def add(self, pattern: str, sub: Subscription) -> None:
        sub.key = self._index.add(pattern, sub)

    def remove(self, sub: Subscription) -> None:
        sub.stop()
        self._index.remove(sub.key)

    def subscriptions(self) -> list[Subscription]:
        return list(self._index.values())

    def close(self) -> list[Subscription]:
        """Forget every subscription and return them (the caller completes them)."""
        subs = self.subscriptions()
        self._index = SubjectIndex()
        self._resolved = self._index.resolved
        return subs

    def deliver(self, subject: str, off: int, event: Event) -> None:
        """Deliver one event (the hot path: kept flat on purpose)."""
        subs = self._resolved.get(subject)
        if subs is None:
            subs = self._index.lookup(subject)
        if not subs:
            return
        if self._dispatching:  # published from inside a subscriber: queue, keep order
            self._pending.append((subject, off, event))
            return
        self._dispatching = True
        try:
            # No duplicate guard needed here: every subscription in ``subs`` existed
            # before ``off`` was assigned, and a stopped one has a no-op ``on_next``.
            for sub in subs:
                on_next = sub.on_next  # a slot read, then a call: what 3.11 specializes
                try:
                    on_next(event)
                except Exception as exc:  # a faulty consumer harms nobody else
                    self._drop(sub, exc)
            if self._pending:
                self._drain_pending()
        finally:
            self._dispatching = False

    def deliver_batch(self, subject: str, first: int, events: Sequence[Event]) -> None:
        """Deliver events with consecutive offsets from ``first``, each subscriber
        receiving the whole batch in order."""
        subs = self.matching(subject)
        if not subs or not events:
            return
        if self._dispatching:
            self._pending.extend((subject, off, e) for off, e in enumerate(events, first))
            return
        self._dispatching = True
        try:
            for sub in subs:
                self._deliver_guarded(sub, first, events)
            if self._pending:
                self._drain_pending()
        finally:
            self._dispatching = False

    def _deliver_guarded(self, sub: Subscription, first: int, events: Sequence[Event]) -> None:
        """Deliver what ``sub`` has not seen yet; stop at its first failure."""
        for off, event in enumerate(events, first):
            if off > sub.last:
                sub.last = off
                try:
                    sub.on_next(event)
                except Exception as exc:
                    self._drop(sub, exc)
                    return

    def _drain_pending(self) -> None:
        """Deliver events that subscribers published while being delivered to, in order."""
        pending = self._pending
        while pending:
            subject, off, event = pending.popleft()
            for sub in self.matching(subject):
                if off > sub.last:
                    sub.last = off
                    try:
                        sub.on_next(event)
                    except Exception as exc:
                        self._drop(sub, exc)

    def _drop(self, sub: Subscription, exc: Exception) -> None:
        self.failed += 1
        self.remove(sub)
        with contextlib.suppress(Exception):  # the observer is already broken
            sub.observer.on_error(exc)

    def rewind(self) -> None:
        """A new epoch started: offsets restart, so every subscription's mark does too."""
        for sub in self._index.values():
            sub.last = 0

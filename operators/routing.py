"""Routing: named branches, stable partitions, broadcast, broker publishing, expiring groups.

``route``, ``route_when``, ``partition`` and ``broadcast`` turn one stream into several and
return :class:`Branches`, a mapping of branch name to observable sharing one upstream
subscription. Subscribe to the branches you need, then call ``connect()`` (so a cold
source cannot run before every branch listens); its disposable unsubscribes upstream.
Branches are hot: a subscriber sees events from the moment it subscribes.

Operators assume one loop or thread.
"""

from __future__ import annotations

import contextlib
import itertools
import zlib
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from streams.errors import PipelineError

from . import state as collection
from ._core import TICK, Chain, Spec, Stage, clock, default_scheduler, lean
from ._snapshot import SnapshotStage, decode, encode
from .policy import OnError, check_policy, make_handler

__all__ = [
    "Branches",
    "Group",
    "UnroutableError",
    "broadcast",
    "group_by_key",
    "partition",
    "publish_to",
    "route",
    "route_when",
    "stable_hash",
]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class UnroutableError(PipelineError, LookupError):
    """An event matched no branch in strict mode (no ``unmatched`` branch)."""


@dataclass(frozen=True, slots=True)
class _Ended:
    """How a branch ended: with ``error``, or completed when it is ``None``."""

    error: Exception | None

    def tell(self, observer: abc.ObserverBase[Any]) -> None:
        if self.error is not None:
            observer.on_error(self.error)
        else:
            observer.on_completed()


class _Branch(Observable[Any]):
    """A hot output: delivers to its current subscribers, no locks, no copying per event."""

    def __init__(self, name: Any, on_unsubscribed: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.name = name
        self.observers: list[abc.ObserverBase[Any]] = []
        self.done: _Ended | None = None
        self.on_unsubscribed = on_unsubscribed  # called when the last subscriber leaves

    def _subscribe_core(
        self, observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        if self.done is not None:
            self.done.tell(observer)
            return Disposable()
        self.observers = [*self.observers, observer]

        def remove() -> None:
            self.observers = [o for o in self.observers if o is not observer]
            if not self.observers and self.on_unsubscribed is not None:
                self.on_unsubscribed()

        return Disposable(remove)

    def on_next(self, value: Any) -> None:
        for o in self.observers:
            try:
                o.on_next(value)
            except Exception as exc:  # a faulty consumer ends only its own subscription
                self.observers = [x for x in self.observers if x is not o]
                with contextlib.suppress(Exception):
                    o.on_error(exc)

    def end(self, error: Exception | None) -> None:
        if self.done is not None:
            return
        self.done = ended = _Ended(error)
        observers, self.observers = self.observers, []
        for o in observers:
            ended.tell(o)


class Branches(Mapping[Any, Observable[T]], Generic[T]):
    """Named outputs of one routed stream; ``connect()`` subscribes upstream once."""

    def __init__(
        self,
        source: Observable[T],
        names: Iterable[Any],
        dispatch: Callable[[Branches[T]], Callable[[Any], None]],
    ) -> None:
        self.source = source
        self.branches: dict[Any, _Branch] = {n: _Branch(n) for n in names}
        if not self.branches:
            raise ValueError("at least one branch is needed")
        self._dispatch = dispatch
        self._connection: abc.DisposableBase | None = None

    def __getitem__(self, name: Any) -> Observable[T]:
        return self.branches[name]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.branches)

    def __len__(self) -> int:
        return len(self.branches)

    def _end(self, error: Exception | None) -> None:
        for b in self.branches.values():
            b.end(error)
        if self._connection is not None:
            self._connection.dispose()

    def connect(self, scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        """Subscribe upstream (once); dispose the result to disconnect."""
        if self._connection is None:
            on_next = self._dispatch(self)
            self._connection = Disposable()  # guards against re-entrant connect
            self._connection = self.source.subscribe(
                on_next, lambda e: self._end(e), lambda: self._end(None), scheduler=scheduler
            )
        return self._connection


def _router(
    choose: Callable[[Any], Any], unmatched: Any, on_error: OnError
) -> Callable[[Branches[Any]], Callable[[Any], None]]:
    check_policy(on_error)

    def dispatch(bs: Branches[Any]) -> Callable[[Any], None]:
        table = {name: b.on_next for name, b in bs.branches.items()}
        handler = make_handler(on_error, bs._end)
        fallback = table.get(unmatched) if unmatched is not None else None

        def on_next(value: Any) -> None:
            try:
                name = choose(value)
            except Exception as exc:
                handler(value, exc)
                return
            deliver = table.get(name, fallback)
            if deliver is None:
                handler(value, UnroutableError(f"no branch for {name!r}"))
            else:
                deliver(value)

        return on_next

    return dispatch


def _routed(
    choose: Callable[[Any], Any], names: Iterable[Any], unmatched: Any, on_error: OnError
) -> Callable[[Observable[T]], Branches[T]]:
    """Branches named ``names`` (plus ``unmatched`` if given), fed by ``choose(event)``."""
    all_names = [*names, unmatched] if unmatched is not None else list(names)
    dispatch = _router(choose, unmatched, on_error)
    return lambda source: Branches(source, all_names, dispatch)


def route(
    key: Callable[[T], Any],
    names: Iterable[Any],
    *,
    unmatched: Any = None,
    on_error: OnError = "fail",
) -> Callable[[Observable[T]], Branches[T]]:
    """Send each event to the branch named ``key(event)``.

    Strict by default: a key naming no branch raises :class:`UnroutableError` through
    ``on_error``. Pass ``unmatched="other"`` to collect such events in an extra branch.

    >>> import reactivex
    >>> bs = reactivex.of("a1", "b1", "z9").pipe(route(lambda s: s[0], ["a", "b"],
    ...     unmatched="rest"))
    >>> _ = bs["a"].subscribe(lambda x: print("a", x))
    >>> _ = bs["rest"].subscribe(lambda x: print("rest", x))
    >>> _ = bs.connect()
    a a1
    rest z9
    """
    return _routed(key, names, unmatched, on_error)


def route_when(
    predicates: Mapping[Any, Callable[[T], Any]],
    *,
    unmatched: Any = None,
    on_error: OnError = "fail",
) -> Callable[[Observable[T]], Branches[T]]:
    """Send each event to the first branch whose predicate holds (in mapping order).

    >>> import reactivex
    >>> bs = reactivex.of(1, 50, 500).pipe(route_when(
    ...     {"small": lambda x: x < 10, "big": lambda x: x >= 100}, unmatched="mid"))
    >>> _ = bs["mid"].subscribe(print)
    >>> _ = bs.connect()
    50
    """
    tests = list(predicates.items())

    def choose(value: Any) -> Any:
        for name, test in tests:
            if test(value):
                return name
        return None

    return _routed(choose, predicates, unmatched, on_error)


def stable_hash(key: Any) -> int:
    """A hash that is the same in every process (unlike ``hash()`` of a str).

    >>> stable_hash("room-1") == stable_hash("room-1")
    True
    """
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, str):
        data = key.encode()
    else:
        data = repr(key).encode()
    return zlib.crc32(data)


def partition(
    n: int, key: Callable[[T], Any], *, on_error: OnError = "fail"
) -> Callable[[Observable[T]], Branches[T]]:
    """Split into branches ``0..n-1`` by ``stable_hash(key(event)) % n``: one key, one branch.

    >>> import reactivex
    >>> bs = reactivex.of("x", "y", "x").pipe(partition(4, key=str))
    >>> got = {i: [] for i in bs}
    >>> for i in bs:
    ...     _ = bs[i].subscribe(got[i].append)
    >>> _ = bs.connect()
    >>> sorted(v for v in got.values() if v)
    [['x', 'x'], ['y']]
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return _routed(lambda v: stable_hash(key(v)) % n, range(n), None, on_error)


def broadcast(names: Iterable[Any]) -> Callable[[Observable[T]], Branches[T]]:
    """Every event to every branch, from one upstream subscription.

    >>> import reactivex
    >>> bs = reactivex.of(1, 2).pipe(broadcast(["log", "store"]))
    >>> _ = bs["log"].subscribe(lambda x: print("log", x))
    >>> _ = bs["store"].subscribe(lambda x: print("store", x))
    >>> _ = bs.connect()
    log 1
    store 1
    log 2
    store 2
    """

    def dispatch(bs: Branches[Any]) -> Callable[[Any], None]:
        outs = [b.on_next for b in bs.branches.values()]

        def on_next(value: Any) -> None:
            for out in outs:
                out(value)

        return on_next

    return lambda source: Branches(source, names, dispatch)


# -- publishing into a broker --------------------------------------------------------------


class _Publish(Stage):
    def __init__(self, down: Any, chain: Chain, spec: _PublishSpec) -> None:
        super().__init__(down, chain)
        self.publish = spec.broker.publish
        self.subject = spec.subject
        self.handler = make_handler(spec.on_error, self.fail)

    def on_next(self, value: Any) -> None:
        try:
            self.publish(self.subject(value), value)
        except Exception as exc:
            self.handler(value, exc)
            return
        self.down.on_next(value)


class _PublishSpec(Spec):
    name = "publish_to"

    def __init__(self, broker: Any, subject: Callable[[Any], str], on_error: OnError) -> None:
        if not callable(getattr(broker, "publish", None)):
            raise TypeError("broker needs a publish(subject, event) method")
        self.broker, self.subject = broker, subject
        self.on_error = check_policy(on_error)

    def build(self, down: Any, chain: Chain) -> Stage:
        return _Publish(down, chain, self)


def publish_to(
    broker: Any, subject: Callable[[T], str], *, on_error: OnError = "fail"
) -> Callable[[Observable[T]], Observable[T]]:
    """Publish each event to ``broker.publish(subject(event), event)``; pass it on.

    Works with any object having a synchronous ``publish`` (``streams.MemoryBroker``).
    A failed publish (bad subject, closed broker) follows ``on_error``.

    >>> import reactivex
    >>> from streams import MemoryBroker
    >>> b = MemoryBroker()
    >>> _ = reactivex.of({"room": "a"}, {"room": "b"}).pipe(
    ...     publish_to(b, lambda m: f"chat.{m['room']}")).subscribe()
    >>> [e.subject for e in b.history(">")]
    ['chat.a', 'chat.b']
    """
    return lean(_PublishSpec(broker, subject, on_error))


# -- grouping with expiry ------------------------------------------------------------------


class Group(Observable[T], Generic[K, T]):
    """One group: an observable of the events of one ``key`` (as reactivex's
    ``GroupedObservable``). It is hot: subscribe when the group arrives (``group.pipe(...)``
    in a ``flat_map``), or its first events are missed. ``group.events`` is the group itself,
    for code written when a group was a ``(key, events)`` pair."""

    def __init__(self, key: K, branch: _Branch) -> None:
        super().__init__()
        self.key = key
        self._branch = branch

    @property
    def events(self) -> Observable[T]:
        return self

    def _subscribe_core(
        self, observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        return self._branch._subscribe_core(observer, scheduler)

    def __repr__(self) -> str:
        return f"Group(key={self.key!r})"


@dataclass(slots=True)
class _GroupState:
    """One open group: its hot output, when it last saw an event, its expiry timer."""

    branch: _Branch
    last_seen: float
    timer: abc.DisposableBase | None = None
    due: float = 0.0  # when the timer fires; groups due together expire in arming order
    armed: int = 0
    label: str = ""  # the key as nested stage names show it (operators.state.part_label)


class _Detached:
    """Where a group stage's outer output goes once the outer subscription is disposed."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    def on_next(self, value: Any) -> None:
        return None

    def on_error(self, error: Exception) -> None:
        self.chain.stop()

    def on_completed(self) -> None:
        self.chain.stop()


class _Groups(SnapshotStage):
    stage_kind = "group_by_key"

    def __init__(self, down: Any, chain: Chain, spec: _GroupSpec) -> None:
        super().__init__(down, chain)
        self.spec = spec
        self.stage_name = spec.stage_name
        self.armed = itertools.count()
        self.scheduler = default_scheduler(spec.scheduler, chain.scheduler)
        self.now = clock(self.scheduler)
        self.handler = make_handler(spec.on_error, self.fail)
        self.groups: dict[Any, _GroupState] = {}
        self.detached = False  # the outer subscription is gone; groups still subscribed go on
        self.into = collection.current()  # where the groups' own pipelines register stages

    def on_next(self, value: Any) -> None:
        try:
            k = self.spec.key(value)
        except Exception as exc:
            self.handler(value, exc)
            return
        g = self.groups.get(k)
        if g is None:
            if self.detached:
                return  # nobody can hear of a new group any more (as in RxJava)
            g = self.groups[k] = _GroupState(_Branch(k, self.unsubscribed), self.now())
            if self.spec.expire_after is not None:
                self.arm(k, g, self.spec.expire_after)
            self.announce(k, g)
        else:
            g.last_seen = self.now()
        g.branch.on_next(value)

    def check(self, k: Any) -> None:
        g = self.groups.get(k)
        if g is None:
            return
        left = g.last_seen + self.spec.expire_after - self.now()  # type: ignore[operator]
        if left > TICK:
            self.arm(k, g, left)
        else:
            del self.groups[k]
            self.close(g, None)
            self.unsubscribed()

    def announce(self, k: Any, g: _GroupState) -> None:
        """Emit the group. Downstream subscribes its pipeline now, whose stateful stages
        register under this stage's name and the key (``users["ada"]/rate_limit-0``), so a
        keyed worker snapshots and restores them with this stage."""
        if self.into is not None:
            g.label = collection.part_label(k)
        with collection.inside(self.into, self.registered_as, g.label):
            self.down.on_next(Group(k, g.branch))

    def close(self, g: _GroupState, error: Exception | None) -> None:
        """End a group; its pipeline's stages leave the collection with it."""
        g.branch.end(error)
        collection.forget(self.into, self.registered_as, g.label)

    def arm(self, k: Any, g: _GroupState, seconds: float) -> None:
        g.due, g.armed = self.now() + seconds, next(self.armed)
        g.timer = self.after(self.scheduler, seconds, lambda: self.check(k))

    # -- snapshot: the open groups (keys, idle time, expiry timer); their pipelines' stages
    # -- are snapshotted by name beside this one (operators.state, nested stages)
    def config(self) -> dict[str, Any]:
        return {"expire_after": self.spec.expire_after}

    def state(self) -> dict[str, Any]:
        now, groups = self.now(), self.groups
        order = sorted(groups, key=lambda k: (round(groups[k].due, 6), groups[k].armed))
        rank = {id(groups[k]): i for i, k in enumerate(order)}
        return {
            "groups": [
                [
                    encode(k),
                    now - g.last_seen,
                    None if g.timer is None else [rank[id(g)], g.due - now],
                ]
                for k, g in groups.items()
            ]
        }

    def load(self, state: dict[str, Any]) -> None:
        """Reopen the groups and announce each again (a new :class:`Group` downstream), so
        downstream subscribes to them as it did before the snapshot (and their pipelines'
        stages register, to be restored next by :func:`operators.state.restore_all`); their
        expiry clocks go on where they stopped."""
        self.end_all(None)
        now, timers = self.now(), []
        for key, idle_for, timer in state["groups"]:
            k = decode(key)
            g = self.groups[k] = _GroupState(_Branch(k, self.unsubscribed), now - idle_for)
            if timer is not None:
                timers.append((timer[0], timer[1], k, g))
        for _, left, k, g in sorted(timers, key=lambda t: t[0]):
            self.arm(k, g, max(left, 0.0))
        for k, g in list(self.groups.items()):
            self.announce(k, g)

    def end_all(self, error: Exception | None) -> None:
        groups, self.groups = self.groups, {}
        for g in groups.values():
            if g.timer is not None:
                g.timer.dispose()
            self.close(g, error)

    def on_completed(self) -> None:
        self.end_all(None)
        super().on_completed()

    def on_error(self, error: Exception) -> None:
        self.end_all(error)
        super().on_error(error)

    def dispose(self) -> None:
        for g in self.groups.values():
            if g.timer is not None:
                g.timer.dispose()

    # -- outer disposal: groups outlive it while subscribed (reference counted, as in Rx) --
    def serving(self) -> bool:
        return any(g.branch.observers for g in self.groups.values())

    def detach(self) -> None:
        self.detached = True
        self.down = _Detached(self.chain)

    def unsubscribed(self) -> None:
        if self.detached and not self.chain.stopped and not self.serving():
            self.chain.stop()


class _GroupSpec(Spec):
    name = "group_by_key"

    def __init__(
        self,
        key: Callable[[Any], Any],
        expire_after: float | None,
        scheduler: abc.SchedulerBase | None,
        on_error: OnError,
        stage_name: str | None = None,
    ) -> None:
        self.stage_name = stage_name
        if expire_after is not None and not expire_after > 0:
            raise ValueError(f"expire_after must be > 0 seconds, got {expire_after}")
        self.key, self.expire_after, self.scheduler = key, expire_after, scheduler
        self.on_error = check_policy(on_error)

    def build(self, down: Any, chain: Chain) -> Stage:
        return _Groups(down, chain, self)


def group_by_key(
    key: Callable[[T], K],
    expire_after: float | None = None,
    *,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    name: str | None = None,
) -> Callable[[Observable[T]], Observable[Group[K, T]]]:
    """Emit a :class:`Group` per new key; a group completes after ``expire_after`` seconds
    without events (one timer per open group), and a later event for that key starts a new
    group. Memory is bounded by the number of *active* keys.

    Disposing the outer subscription does not cut off groups that still have subscribers
    (as in reactivex's ``group_by``, RxJava and RxJS): they go on receiving their events
    and end with the source; events of new keys are dropped, and upstream is unsubscribed
    once the last group subscriber has gone. A group without subscribers holds nothing.

    Each :class:`Group` is an observable with a ``.key`` (like reactivex's
    ``GroupedObservable``): attach a pipeline to it as it arrives, typically
    ``ops.flat_map(lambda g: g.pipe(rate_limit(...)))``.

    Snapshot (``name=``, default ``"group_by_key-<n>"``): the open groups (key, time since
    its last event, time left on its expiry timer). The stateful stages of the pipelines
    subscribed to a group when it arrives are snapshotted beside it under a key-scoped name,
    ``"<name>[<key as JSON>]/<stage>"`` (``users["ada"]/rate_limit-0``). Restore reopens each
    group and emits its :class:`Group` again, in the original order, so downstream
    subscribes to it afresh, then restores those stages before any event reaches them: a
    per-user rate limit survives a handover. (Subscribe on arrival: a pipeline attached to
    a group later is not collected.)

    >>> import reactivex
    >>> def show(g):
    ...     _ = g.subscribe(lambda x: print(g.key, x))
    >>> _ = reactivex.of("a1", "b1", "a2").pipe(group_by_key(lambda s: s[0])).subscribe(show)
    a a1
    b b1
    a a2
    """
    return lean(_GroupSpec(key, expire_after, scheduler, on_error, name))

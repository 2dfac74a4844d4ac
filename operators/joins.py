"""Joins: two streams by key within an event-time window or interval, and a stream with a table.

- :func:`join_window`: stream-stream join by key within a tumbling, sliding or session
  window (Flink's window join). When a window closes, the pairs of its left and right
  events with the same key are emitted as one :class:`Window` whose value is the list of
  ``(left, right)`` pairs (windows without a pair are not emitted: an inner join).
- :func:`interval_join`: pairs ``(left, right)`` with the same key and
  ``left_time + lower <= right_time <= left_time + upper`` (Flink's interval join), emitted
  as soon as the second of the two arrives; state is dropped once the watermark has passed
  every partner an event could still have.
- :func:`lookup` / :func:`enrich`: each event joined with the latest value for its key in a
  *table*, another stream of rows (a changelog: a broker subject's retained history plus its
  live tail, say), like a Kafka Streams stream-table join.

The source is the left side and ``other`` the right side. ``other`` (or the table) is
subscribed first, when the result is subscribed, with the same scheduler. Two-stream joins
run on event time with ``timestamp=`` (``other_timestamp`` defaults to it) or on the
scheduler's clock without; their watermark is the *smaller* of the two sides' largest
timestamps, minus ``lateness``, as in Flink, so a side that has seen nothing yet holds
results back until it does (or until both complete). An event is late when it is older than
the watermark (``timestamp < watermark``), or for window joins when all its windows have
closed; late events go to ``late`` (or the main output as :class:`Late`). The output
completes when both inputs have (the table's completion does not end a lookup: the table
keeps its last state). User functions follow the error policy ``on_error``.
Operators assume one loop or thread.

Snapshots (``name=``, default ``"join_window-<n>"``, ``"interval_join-<n>"``): a window join
holds what its window holds (module :mod:`operators.windows`; items are ``[side, event]``)
plus each side's largest timestamp; an interval join holds every buffered event (side, key,
time) in arrival order, the watermark and each side's largest timestamp. On processing time
the times are relative to the snapshot. ``lookup``/``enrich`` hold no snapshot: their table
is rebuilt from the table stream (a changelog), resubscribed with the pipeline.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable
from typing import Any, Literal, TypeVar

from reactivex import Observable, abc

from ._core import Chain, Spec, Stage, clock, default_scheduler, lean
from ._snapshot import SnapshotStage, decode, encode, finite
from .policy import OnError, check_policy, make_handler
from .windows import Late, Window, _Windows, _WindowSpec

__all__ = ["enrich", "interval_join", "join_window", "lookup"]

L = TypeVar("L")
R = TypeVar("R")
LEFT, RIGHT = 0, 1
_MISSING: Any = object()


def _pairs(items: list[tuple[int, Any]]) -> list[tuple[Any, Any]]:
    lefts = [v for side, v in items if side == LEFT]
    rights = [v for side, v in items if side == RIGHT]
    return [(a, b) for a in lefts for b in rights]


class _Right(abc.ObserverBase[Any]):
    """The observer of the right-hand stream, feeding one side of a two-input stage."""

    def __init__(self, stage: Any) -> None:
        self.stage = stage

    def on_next(self, value: Any) -> None:
        self.stage.receive(RIGHT, value)

    def on_error(self, error: Exception) -> None:
        if not self.stage.chain.stopped:
            self.stage.on_error(error)

    def on_completed(self) -> None:
        self.stage.side_completed(RIGHT)


class _TwoSided:
    """What both two-stream joins share: the right subscription, per-side watermarks and
    completion once both sides have completed."""

    chain: Chain
    down: Any
    spec: Any

    def start_right(self, other: Observable[Any]) -> None:
        self.highest = [-math.inf, -math.inf]
        self.completed = [False, False]
        self.right: abc.DisposableBase | None = None
        given = self.spec.scheduler or self.chain.scheduler  # as given: None keeps the default
        self.right = other.subscribe(_Right(self), scheduler=given)

    def side_watermark(self, side: int, t: float, lateness: float) -> float:
        if t > self.highest[side]:
            self.highest[side] = t
        return min(self.highest) - lateness

    def side_completed(self, side: int) -> None:
        self.completed[side] = True
        if all(self.completed) and not self.chain.stopped:
            self.finish()

    def finish(self) -> None:
        raise NotImplementedError

    def stop_right(self) -> None:
        right, self.right = self.right, None
        if right is not None:
            right.dispose()


# -- join_window ---------------------------------------------------------------------------


def _times_out(ts: list[float], shift: float) -> list[float | None]:
    return [finite(t - shift) for t in ts]


def _times_in(ts: list[float | None], shift: float) -> list[float]:
    return [-math.inf if t is None else t + shift for t in ts]


class _JoinWindows(_TwoSided, _Windows):
    def __init__(self, down: Any, chain: Chain, spec: _JoinWindowSpec) -> None:
        _Windows.__init__(self, down, chain, spec)
        self.stage_kind = "join_window"
        self.sides = spec.sides
        self.start_right(spec.other)

    def config(self) -> dict[str, Any]:
        return {**_Windows.config(self), "window": self.spec.kind}

    def shift(self) -> float:
        return 0.0 if self.spec.timestamp is not None else self.now()

    def state(self) -> dict[str, Any]:
        return {**_Windows.state(self), "highest": _times_out(self.highest, self.shift())}

    def load(self, state: dict[str, Any]) -> None:
        _Windows.load(self, state)
        self.highest = _times_in(state["highest"], self.shift())

    def on_next(self, value: Any) -> None:
        self.receive(LEFT, value)

    def receive(self, side: int, value: Any) -> None:
        if self.chain.stopped:
            return
        timestamp, key = self.sides[side]
        try:
            t, k = self.locate(timestamp, key, value)
        except Exception as exc:
            self.handler(value, exc)
            return
        self.place(k, t, (side, value), value)
        if timestamp is not None:
            self.advance(self.side_watermark(side, t, self.spec.lateness))
        else:
            self.follow_clock(t)

    def output(self, window: Window) -> None:
        if window.value:
            self.down.on_next(window)

    def on_completed(self) -> None:
        self.side_completed(LEFT)

    def finish(self) -> None:
        _Windows.on_completed(self)

    def dispose(self) -> None:
        _Windows.dispose(self)
        self.stop_right()


class _JoinWindowSpec(_WindowSpec):
    name = "join_window"

    def __init__(
        self,
        other: Observable[Any],
        window: Any,
        key: Callable[[Any], Hashable],
        other_key: Callable[[Any], Hashable] | None,
        timestamp: Callable[[Any], float] | None,
        other_timestamp: Callable[[Any], float] | None,
        lateness: float,
        late: Any,
        scheduler: abc.SchedulerBase | None,
        on_error: OnError,
        stage_name: str | None = None,
    ) -> None:
        shape = getattr(window, "spec", None)
        if not isinstance(shape, _WindowSpec) or isinstance(shape, _JoinWindowSpec):
            raise TypeError("window must be tumbling(size), sliding(size, step) or session(gap)")
        if shape.key is not None or shape.timestamp is not None or shape.lateness or shape.idle:
            raise ValueError("give key, timestamp and lateness to join_window, not to its window")
        super().__init__(
            shape.kind, shape.size, shape.step, key, timestamp, lateness, None, _pairs, late,
            scheduler, on_error, stage_name,
        )  # fmt: skip
        self.other = other
        other_timestamp = other_timestamp or timestamp
        self.sides = ((timestamp, key), (other_timestamp, other_key or key))
        if (timestamp is None) != (other_timestamp is None):
            raise ValueError("both sides need a timestamp, or neither (processing time)")

    def build(self, down: Any, chain: Chain) -> Stage:
        return _JoinWindows(down, chain, self)


def join_window(
    other: Observable[R],
    key: Callable[[L], Hashable],
    window: Any,
    *,
    other_key: Callable[[R], Hashable] | None = None,
    timestamp: Callable[[L], float] | None = None,
    other_timestamp: Callable[[R], float] | None = None,
    lateness: float = 0.0,
    late: abc.ObserverBase[Any] | Callable[[Any], Any] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    name: str | None = None,
) -> Callable[[Observable[L]], Observable[Window | Late[Any]]]:
    """Join with ``other`` by key within the windows of ``window`` (``tumbling(size)``,
    ``sliding(size, step)`` or ``session(gap)``): each closed window with both sides
    present gives ``Window(key, start, end, [(left, right), ...])``, every pair of its
    left and right events in arrival order. Sessions are formed by both sides' events.

    >>> import reactivex
    >>> from operators import tumbling
    >>> clicks = reactivex.of(("u1", 3), ("u2", 14))
    >>> views = reactivex.of(("u1", 1), ("u1", 12), ("u2", 15))
    >>> clicks.pipe(
    ...     join_window(views, key=lambda e: e[0], window=tumbling(10), timestamp=lambda e: e[1])
    ... ).subscribe(print)  # doctest: +ELLIPSIS
    Window(key='u1', start=0.0, end=10.0, value=[(('u1', 3), ('u1', 1))])
    Window(key='u2', start=10.0, end=20.0, value=[(('u2', 14), ('u2', 15))])
    <...>
    """
    return lean(
        _JoinWindowSpec(
            other, window, key, other_key, timestamp, other_timestamp, lateness, late, scheduler,
            on_error, name,
        )
    )  # fmt: skip


# -- interval_join -------------------------------------------------------------------------


class _IntervalJoin(_TwoSided, SnapshotStage):
    stage_kind = "interval_join"

    def __init__(self, down: Any, chain: Chain, spec: _IntervalSpec) -> None:
        Stage.__init__(self, down, chain)
        self.spec = spec
        self.stage_name = spec.stage_name
        self.now = clock(default_scheduler(spec.scheduler, chain.scheduler))
        self.handler = make_handler(spec.on_error, self.fail)
        # per side: key -> {seq: (time, event)} in arrival order
        self.buffers: tuple[dict[Any, dict[int, tuple[float, Any]]], ...] = ({}, {})
        self.expiry: list[tuple[float, int, int, Any]] = []  # (drop after, seq, side, key)
        self.seq = itertools.count()
        self.watermark = -math.inf
        late = spec.late
        if late is None:
            self.late: Callable[[Any], Any] = lambda e: self.down.on_next(Late(e))
        else:
            self.late = getattr(late, "on_next", late)
        self.start_right(spec.other)

    def on_next(self, value: Any) -> None:
        self.receive(LEFT, value)

    def receive(self, side: int, value: Any) -> None:
        if self.chain.stopped:
            return
        spec = self.spec
        timestamp, key = spec.sides[side]
        try:
            t = self.now() if timestamp is None else float(timestamp(value))
            if not math.isfinite(t):
                raise ValueError(f"timestamp must be a finite number, got {t!r}")
            k = key(value)
            hash(k)
        except Exception as exc:
            self.handler(value, exc)
            return
        if t < self.watermark:
            self.late(value)
            return
        seq = next(self.seq)
        mine = self.buffers[side].get(k)
        if mine is None:
            mine = self.buffers[side][k] = {}
        mine[seq] = (t, value)
        # the last time a partner can have: left + upper, or right - lower
        heapq.heappush(self.expiry, (t + spec.upper if side == LEFT else t - spec.lower,
                                     seq, side, k))  # fmt: skip
        others = self.buffers[1 - side].get(k)
        if others:
            self.pair(side, t, value, others)
        self.advance(self.side_watermark(side, t, spec.lateness))

    def pair(self, side: int, t: float, value: Any, others: dict[int, tuple[float, Any]]) -> None:
        lower, upper, on_next = self.spec.lower, self.spec.upper, self.down.on_next
        if side == LEFT:
            lo, hi = t + lower, t + upper
            for u, other in list(others.values()):
                if lo <= u <= hi:
                    on_next((value, other))
        else:
            lo, hi = t - upper, t - lower
            for u, other in list(others.values()):
                if lo <= u <= hi:
                    on_next((other, value))

    def advance(self, watermark: float) -> None:
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        expiry, buffers = self.expiry, self.buffers
        while expiry and expiry[0][0] < watermark:
            _, seq, side, k = heapq.heappop(expiry)
            mine = buffers[side][k]
            del mine[seq]
            if not mine:
                del buffers[side][k]

    def on_completed(self) -> None:
        self.side_completed(LEFT)

    def finish(self) -> None:
        Stage.on_completed(self)

    def dispose(self) -> None:
        self.stop_right()
        self.buffers[LEFT].clear()
        self.buffers[RIGHT].clear()
        self.expiry.clear()

    # -- snapshot: buffered events in arrival order, watermark, largest time per side ----
    def config(self) -> dict[str, Any]:
        spec = self.spec
        return {"lower": spec.lower, "upper": spec.upper, "lateness": spec.lateness,
                "event_time": spec.sides[LEFT][0] is not None}  # fmt: skip

    def shift(self) -> float:
        return 0.0 if self.spec.sides[LEFT][0] is not None else self.now()

    def state(self) -> dict[str, Any]:
        shift = self.shift()
        held = sorted(
            (seq, side, k, t, value)
            for side in (LEFT, RIGHT)
            for k, mine in self.buffers[side].items()
            for seq, (t, value) in mine.items()
        )
        return {
            "events": [[side, encode(k), t - shift, encode(v)] for _, side, k, t, v in held],
            "watermark": finite(self.watermark - shift),
            "highest": _times_out(self.highest, shift),
        }

    def load(self, state: dict[str, Any]) -> None:
        shift, spec = self.shift(), self.spec
        self.buffers[LEFT].clear()
        self.buffers[RIGHT].clear()
        self.expiry.clear()
        for side, key, t, value in state["events"]:
            k, t, seq = decode(key), t + shift, next(self.seq)
            self.buffers[side].setdefault(k, {})[seq] = (t, decode(value))
            drop = t + spec.upper if side == LEFT else t - spec.lower
            heapq.heappush(self.expiry, (drop, seq, side, k))
        self.watermark = _times_in([state["watermark"]], shift)[0]
        self.highest = _times_in(state["highest"], shift)


class _IntervalSpec(Spec):
    name = "interval_join"

    def __init__(
        self,
        other: Observable[Any],
        key: Callable[[Any], Hashable],
        lower: float,
        upper: float,
        other_key: Callable[[Any], Hashable] | None,
        timestamp: Callable[[Any], float] | None,
        other_timestamp: Callable[[Any], float] | None,
        lateness: float,
        late: Any,
        scheduler: abc.SchedulerBase | None,
        on_error: OnError,
        stage_name: str | None = None,
    ) -> None:
        self.stage_name = stage_name
        if not lower <= upper:
            raise ValueError(f"lower must be <= upper, got {lower}, {upper}")
        if lateness < 0:
            raise ValueError(f"lateness must be >= 0, got {lateness}")
        other_timestamp = other_timestamp or timestamp
        if (timestamp is None) != (other_timestamp is None):
            raise ValueError("both sides need a timestamp, or neither (processing time)")
        self.other, self.lower, self.upper = other, float(lower), float(upper)
        self.sides = ((timestamp, key), (other_timestamp, other_key or key))
        self.lateness, self.late, self.scheduler = lateness, late, scheduler
        self.on_error = check_policy(on_error)

    def build(self, down: Any, chain: Chain) -> Stage:
        return _IntervalJoin(down, chain, self)


def interval_join(
    other: Observable[R],
    key: Callable[[L], Hashable],
    lower: float,
    upper: float,
    *,
    other_key: Callable[[R], Hashable] | None = None,
    timestamp: Callable[[L], float] | None = None,
    other_timestamp: Callable[[R], float] | None = None,
    lateness: float = 0.0,
    late: abc.ObserverBase[Any] | Callable[[Any], Any] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    name: str | None = None,
) -> Callable[[Observable[L]], Observable[tuple[L, R] | Late[Any]]]:
    """Pairs ``(left, right)`` with equal keys and ``left + lower <= right <= left + upper``
    in time, emitted as soon as both have arrived (each pair once).

    >>> import reactivex
    >>> orders = reactivex.of(("o1", 10), ("o2", 20))
    >>> payments = reactivex.of(("o1", 12), ("o2", 31), ("o1", 14))
    >>> orders.pipe(interval_join(payments, key=lambda e: e[0], lower=0, upper=5,
    ...                           timestamp=lambda e: e[1])).subscribe(print)
    ... # doctest: +ELLIPSIS
    (('o1', 10), ('o1', 12))
    (('o1', 10), ('o1', 14))
    <...>
    """
    return lean(
        _IntervalSpec(
            other, key, lower, upper, other_key, timestamp, other_timestamp, lateness, late,
            scheduler, on_error, name,
        )
    )  # fmt: skip


# -- lookup / enrich -----------------------------------------------------------------------


class _Lookup(Stage):
    def __init__(self, down: Any, chain: Chain, spec: _LookupSpec) -> None:
        super().__init__(down, chain)
        self.spec = spec
        self.handler = make_handler(spec.on_error, self.fail)
        self.table: dict[Any, Any] = {}
        self.key = spec.key
        self.combine = spec.combine
        self.inner = spec.how == "inner"
        self.rows: abc.DisposableBase | None = None
        scheduler = spec.scheduler or chain.scheduler
        self.rows = spec.table.subscribe(self.row, self.table_failed, scheduler=scheduler)

    def row(self, row: Any) -> None:
        try:
            k = self.spec.table_key(row)
            value = self.spec.value(row)
            if value is None:
                self.table.pop(k, None)  # a tombstone deletes the key
            else:
                self.table[k] = value
        except Exception as exc:
            self.handler(row, exc)

    def table_failed(self, error: Exception) -> None:
        if not self.chain.stopped:
            self.on_error(error)

    def on_next(self, value: Any) -> None:
        try:
            found = self.table.get(self.key(value), _MISSING)
            if found is _MISSING:
                if self.inner:
                    return
                found = None
            out = self.combine(value, found)
        except Exception as exc:
            self.handler(value, exc)
            return
        self.down.on_next(out)

    def dispose(self) -> None:
        rows, self.rows = self.rows, None
        if rows is not None:
            rows.dispose()


def _pair(event: Any, value: Any) -> tuple[Any, Any]:
    return (event, value)


def _identity(x: Any) -> Any:
    return x


class _LookupSpec(Spec):
    name = "lookup"

    def __init__(
        self,
        table: Observable[Any],
        key: Callable[[Any], Hashable],
        combine: Callable[[Any, Any], Any],
        table_key: Callable[[Any], Hashable] | None,
        value: Callable[[Any], Any],
        how: str,
        scheduler: abc.SchedulerBase | None,
        on_error: OnError,
    ) -> None:
        if how not in ("inner", "left"):
            raise ValueError(f"how must be 'inner' or 'left', got {how!r}")
        self.table, self.key, self.combine = table, key, combine
        self.table_key, self.value, self.how = table_key or key, value, how
        self.scheduler = scheduler
        self.on_error = check_policy(on_error)

    def build(self, down: Any, chain: Chain) -> Stage:
        return _Lookup(down, chain, self)


def lookup(
    table: Observable[Any],
    key: Callable[[L], Hashable],
    *,
    table_key: Callable[[Any], Hashable] | None = None,
    value: Callable[[Any], Any] = _identity,
    how: Literal["inner", "left"] = "inner",
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
) -> Callable[[Observable[L]], Observable[tuple[L, Any]]]:
    """Join each event with the latest ``value(row)`` of ``table`` for its key, as
    ``(event, value)``. ``table`` is a stream of rows keyed by ``table_key`` (default
    ``key``); a row whose value is ``None`` deletes its key (a tombstone). ``how="inner"``
    drops an event whose key has no value; ``"left"`` emits ``(event, None)``. The table is
    subscribed first, so a broker subject's retained history (``broker.subscribe(pattern,
    since=...)``) is loaded before the first event; its completion keeps the last state and
    its error ends the stream.

    >>> import reactivex
    >>> from streams import MemoryBroker, Position
    >>> broker = MemoryBroker()
    >>> _ = broker.publish("users.u1", {"id": "u1", "name": "Ada"})
    >>> _ = broker.publish("users.u2", {"id": "u2", "name": "Bob"})
    >>> users = broker.subscribe("users.*", since=Position(broker.epoch, 0))
    >>> msgs = reactivex.of({"user": "u2", "text": "hi"}, {"user": "u9", "text": "?"})
    >>> msgs.pipe(lookup(users, key=lambda m: m["user"], table_key=lambda e: e.data["id"],
    ...                  value=lambda e: e.data["name"], how="left")).subscribe(print)
    ... # doctest: +ELLIPSIS
    ({'user': 'u2', 'text': 'hi'}, 'Bob')
    ({'user': 'u9', 'text': '?'}, None)
    <...>
    """
    return lean(_LookupSpec(table, key, _pair, table_key, value, how, scheduler, on_error))


def enrich(
    table: Observable[Any],
    key: Callable[[L], Hashable],
    merge: Callable[[L, Any], Any],
    *,
    table_key: Callable[[Any], Hashable] | None = None,
    value: Callable[[Any], Any] = _identity,
    how: Literal["inner", "left"] = "inner",
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
) -> Callable[[Observable[L]], Observable[Any]]:
    """:func:`lookup` that emits ``merge(event, value)`` instead of the pair (``merge``'s
    errors follow ``on_error``).

    >>> import reactivex
    >>> names = reactivex.of(("u1", "Ada"), ("u2", "Bob"), ("u1", "Ada L."))
    >>> reactivex.of({"user": "u1"}).pipe(enrich(
    ...     names, key=lambda m: m["user"], table_key=lambda r: r[0], value=lambda r: r[1],
    ...     merge=lambda m, name: {**m, "name": name})).subscribe(print)  # doctest: +ELLIPSIS
    {'user': 'u1', 'name': 'Ada L.'}
    <...>
    """
    return lean(_LookupSpec(table, key, merge, table_key, value, how, scheduler, on_error))

"""Tumbling, sliding and session windows on processing time or event time, per key.

- **Processing time** (no ``timestamp``): an event belongs to the windows around "now";
  a window closes when the clock passes its end, by a timer even if no event arrives
  (one timer, armed for the earliest open window end).
- **Event time** (``timestamp=f``): the *watermark* is the largest timestamp seen minus
  ``lateness`` (the allowed out-of-orderness); a window closes once the watermark reaches
  its end. With ``idle=seconds``, all open windows also close after that much processing
  time without events, so a quiet stream still produces results.
- **Late events**: an event is late when every window it belongs to has closed, that is
  ends at or before the watermark (Flink and Bytewax judge lateness the same way). A
  window closed without ever opening counts too: after ``25`` in ``tumbling(10)``, ``3``
  is late. The watermark is one for the whole stream, but sessions merge per key, so an
  event extending its key's open session is never late. An event late for some of its
  sliding windows counts in the others. With ``watermark="per_key"`` (event time and
  ``key=`` needed) each key has its own watermark, from that key's events only: a key's
  windows close and its late events are judged whatever the other keys do, so a keyed
  pipeline gives the same answers when its keys are spread over the partitions of a keyed
  worker group (a stream-wide watermark would advance differently in each partition). Late
  events go to ``late`` (an observer such as a
  ``Subject``, or a callable); without one they are emitted in the main output wrapped as
  :class:`Late`. Never silently dropped. After an idle close or a processing-time close the
  watermark is at least the end of every window emitted, so no window is emitted twice.
- **Window bounds** come from an integer index: window ``k`` is ``[k*step, k*step + size)``
  with the bounds computed exactly from the decimals of ``step`` and ``size`` as written
  (``tumbling(2.2)`` has ``[26.4, 28.6)``), so float rounding never splits a window.

Each closed window is emitted as :class:`Window` ``(key, start, end, value)`` where
``value`` is ``agg(items)`` (default: the list of items). Aggregations: :func:`count_of`,
:func:`sum_of`, :func:`mean_of`, :func:`min_of`, :func:`max_of`, :func:`top_k`.
Completion emits every open window (in end order); an error drops them.
Operators assume one loop or thread.

Snapshot (``name=``, default ``"tumbling-<n>"``, ``"sliding-<n>"``, ``"session-<n>"``): the
open windows in the order they will close (key, window index or session bounds, items),
with sessions per key in their merge order; the watermark (per key: ``marks``, each key's);
with ``idle``, the processing time since the last event. Event times are kept as they are;
on processing time (no ``timestamp``) every time is kept relative to the snapshot, and open
windows are restored onto this process's clock grid at the same distance from their end
(rounded to a window).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from reactivex import Observable, abc

from ._core import TICK, Chain, Spec, Stage, clock, default_scheduler, lean
from ._snapshot import SnapshotStage, decode, encode, finite, rel, unrel
from .policy import OnError, check_policy, make_handler

__all__ = [
    "Late",
    "Window",
    "count_of",
    "max_of",
    "mean_of",
    "min_of",
    "session",
    "sliding",
    "sum_of",
    "top_k",
    "tumbling",
]

T = TypeVar("T")
Watermark = Literal["stream", "per_key"]


class Window(NamedTuple):
    """One closed window: ``key`` is ``None`` unless a key function was given."""

    key: Any
    start: float
    end: float
    value: Any


class Late(NamedTuple, Generic[T]):
    """A late event, emitted in the main output when no ``late`` side output is given."""

    event: T


def _identity(x: Any) -> Any:
    return x


def count_of() -> Callable[[list[Any]], int]:
    """Aggregation: number of events. ``>>> count_of()([1, 2])`` gives ``2``.

    >>> count_of()(["a", "b"])
    2
    """
    return len


def sum_of(field: Callable[[Any], float] = _identity) -> Callable[[list[Any]], float]:
    """Aggregation: sum of ``field(event)``.

    >>> sum_of(lambda e: e["n"])([{"n": 1}, {"n": 2}])
    3
    """
    return lambda items: sum(field(x) for x in items)


def mean_of(field: Callable[[Any], float] = _identity) -> Callable[[list[Any]], float]:
    """Aggregation: arithmetic mean of ``field(event)`` (windows are never empty).

    >>> mean_of()([1, 2, 3])
    2.0
    """
    return lambda items: sum(field(x) for x in items) / len(items)


def min_of(field: Callable[[Any], Any] = _identity) -> Callable[[list[Any]], Any]:
    """Aggregation: smallest ``field(event)``.

    >>> min_of()([3, 1, 2])
    1
    """
    return lambda items: min(field(x) for x in items)


def max_of(field: Callable[[Any], Any] = _identity) -> Callable[[list[Any]], Any]:
    """Aggregation: largest ``field(event)``.

    >>> max_of()([3, 1, 2])
    3
    """
    return lambda items: max(field(x) for x in items)


def top_k(k: int, field: Callable[[Any], Any] = _identity) -> Callable[[list[Any]], list[Any]]:
    """Aggregation: the ``k`` events with the largest ``field(event)``, largest first.

    >>> top_k(2)([3, 1, 5, 2])
    [5, 3]
    """
    return lambda items: heapq.nlargest(k, items, key=field)


class _Grid:
    """Window ``k`` of a tumbling or sliding shape is ``[k*step, k*step + size)``.

    Windows are keyed by their integer index ``k``, and each bound is computed one way
    only: exactly, from the decimal values of ``step`` and ``size`` as written, then rounded
    once to a float. So ``tumbling(2.2)`` has the window ``[26.4, 28.6)`` (not
    ``[26.400000000000002, ...)``) and an event can never split a window in two.

    >>> g = _Grid(2.2, 2.2)
    >>> list(g.indexes(26.4)), g.bounds(12)
    ([12], (26.4, 28.6))
    >>> list(_Grid(0.7, 0.15).indexes(0.4))
    [-1, 0, 1, 2]
    """

    __slots__ = ("cache", "ctx", "exact_size", "exact_step", "size", "step")

    def __init__(self, size: float, step: float) -> None:
        self.size, self.step = size, step
        self.exact_size, self.exact_step = Decimal(repr(size)), Decimal(repr(step))
        self.ctx = Context(prec=60)
        self.cache: dict[int, tuple[float, float]] = {}

    def bounds(self, k: int) -> tuple[float, float]:
        got = self.cache.get(k)
        if got is None:
            if len(self.cache) > 4096:
                self.cache.clear()
            start = self.ctx.multiply(self.exact_step, k)
            got = self.cache[k] = (float(start), float(self.ctx.add(start, self.exact_size)))
        return got

    def indexes(self, t: float) -> range:
        """The indexes of the windows containing ``t``, in start order."""
        bounds = self.bounds
        last = math.floor(t / self.step)
        while bounds(last)[0] > t:
            last -= 1
        while bounds(last + 1)[0] <= t:
            last += 1
        first = math.floor((t - self.size) / self.step) + 1
        while bounds(first)[1] <= t:
            first += 1
        while bounds(first - 1)[1] > t:
            first -= 1
        return range(first, last + 1)


@dataclass(slots=True)
class _Lane:
    """A watermark and the open windows it closes (end-ordered heap): one for the stream,
    or one per key with ``watermark="per_key"``.

    Every window ending at or before the watermark is closed: it is the largest timestamp
    seen minus ``lateness``, or the end of the last window emitted (on completion, idle
    close or a processing-time tick), whichever is larger."""

    watermark: float = -math.inf
    heap: list[tuple[float, int, _Pane | _Session]] = field(default_factory=list)


@dataclass(slots=True)
class _Pane:
    """One open tumbling or sliding window."""

    key: Any
    index: int
    start: float
    end: float
    items: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class _Session:
    """One open session: ``[start, last + gap)``; ``merged`` once folded into another."""

    key: Any
    start: float
    last: float
    end: float
    items: list[Any] = field(default_factory=list)
    merged: bool = False


def _stale(end: float, w: _Pane | _Session) -> bool:
    """A heap entry left behind by a merged, extended or emitted window."""
    return end != w.end or not w.items or (isinstance(w, _Session) and w.merged)


class _Windows(SnapshotStage):
    def __init__(self, down: Any, chain: Chain, spec: _WindowSpec) -> None:
        super().__init__(down, chain)
        self.spec = spec
        self.stage_kind, self.stage_name = spec.kind, spec.stage_name
        self.grid = _Grid(spec.size, spec.step)
        self.scheduler = default_scheduler(spec.scheduler, chain.scheduler)
        self.now = clock(self.scheduler)
        self.handler = make_handler(spec.on_error, self.fail)
        self.panes: dict[tuple[Any, int], _Pane] = {}
        self.sessions: dict[Any, list[_Session]] = {}
        self.seq = itertools.count()
        self.per_key = spec.watermark == "per_key"
        self.lane = _Lane()  # the stream's (unused per key)
        self.lanes: dict[Any, _Lane] = {}  # per key
        self.timer: abc.DisposableBase | None = None
        self.timer_due = math.inf
        self.last_event = 0.0
        late = spec.late
        if late is None:
            self.late: Callable[[Any], Any] = lambda e: self.down.on_next(Late(e))
        else:
            self.late = getattr(late, "on_next", late)

    # -- assignment -----------------------------------------------------------------
    def on_next(self, value: Any) -> None:
        spec = self.spec
        try:
            t, k = self.locate(spec.timestamp, spec.key, value)
        except Exception as exc:
            self.handler(value, exc)
            return
        self.place(k, t, value, value)
        if spec.timestamp is not None:
            self.advance(t - spec.lateness, k)
            if spec.idle is not None:
                self.last_event = self.now()
                if self.timer is None:
                    self.arm(spec.idle, self.idle_check)
        else:
            self.follow_clock(t)

    def locate(
        self, timestamp: Callable[[Any], float] | None, key: Callable[[Any], Any] | None, value: Any
    ) -> tuple[float, Any]:
        """The event's time (the clock's without ``timestamp``) and key; may raise."""
        t = self.now() if timestamp is None else float(timestamp(value))
        if not math.isfinite(t):
            raise ValueError(f"timestamp must be a finite number, got {t!r}")
        k = None if key is None else key(value)
        hash(k)
        return t, k

    def lane_of(self, k: Any) -> _Lane:
        """The watermark ``k`` follows: the stream's, or its own with ``per_key``."""
        if not self.per_key:
            return self.lane
        lane = self.lanes.get(k)
        if lane is None:
            lane = self.lanes[k] = _Lane()
        return lane

    def all_lanes(self) -> list[_Lane]:
        return list(self.lanes.values()) if self.per_key else [self.lane]

    def place(self, k: Any, t: float, item: Any, event: Any) -> None:
        """Put ``item`` in its windows, or ``event`` in the late output."""
        lane = self.lane_of(k)
        if self.spec.kind == "session":
            placed = self.join_session(lane, k, t, item)
        else:
            placed = self.assign(lane, k, t, item)
        if not placed:
            self.late(event)

    def advance(self, watermark: float, k: Any = None) -> None:
        lane = self.lane_of(k)
        if watermark > lane.watermark:
            lane.watermark = watermark
            self.close_through(lane, watermark)

    def follow_clock(self, now: float) -> None:
        """Processing time: one timer, armed for the earliest open window end."""
        heap = self.lane.heap
        if heap and heap[0][0] < self.timer_due:
            self.arm(heap[0][0] - now, self.tick)

    def assign(self, lane: _Lane, k: Any, t: float, value: Any) -> bool:
        """Add ``value`` to each of its windows still open; False if none is (late)."""
        placed = False
        for i in self.grid.indexes(t):
            w = self.panes.get((k, i))
            if w is None:
                start, end = self.grid.bounds(i)
                if end <= lane.watermark:
                    continue
                w = self.panes[(k, i)] = _Pane(k, i, start, end)
                heapq.heappush(lane.heap, (end, next(self.seq), w))
            w.items.append(value)
            placed = True
        return placed

    def join_session(self, lane: _Lane, k: Any, t: float, value: Any) -> bool:
        """Merge ``value`` into its key's open sessions within ``gap``; False if it is late."""
        gap = self.spec.size
        mine = self.sessions.get(k)
        near = [s for s in mine if s.start - gap < t < s.end] if mine else []
        if not near:
            if t + gap <= lane.watermark:
                return False
            w = _Session(k, t, t, t + gap)
            self.sessions.setdefault(k, []).append(w)
        else:
            w = near[0]
            for other in near[1:]:
                w.items += other.items
                w.start, w.last = min(w.start, other.start), max(w.last, other.last)
                mine.remove(other)  # type: ignore[union-attr]
                other.items, other.merged = [], True  # its heap entries go stale
        w.items.append(value)
        w.start, w.last = min(w.start, t), max(w.last, t)
        w.end = w.last + gap
        heapq.heappush(lane.heap, (w.end, next(self.seq), w))
        return True

    # -- closing --------------------------------------------------------------------
    def close_through(self, lane: _Lane, watermark: float) -> None:
        heap = lane.heap
        while heap and heap[0][0] <= watermark and not self.chain.stopped:
            end, _, w = heapq.heappop(heap)
            if not _stale(end, w):
                self.emit(lane, w)

    def close_all(self) -> None:
        """Emit every open window, in end order (across keys too)."""
        if not self.per_key:
            self.close_through(self.lane, math.inf)
            return
        entries = sorted(e for lane in self.lanes.values() for e in lane.heap)
        for lane in self.lanes.values():
            lane.heap = []
        for end, _, w in entries:
            if self.chain.stopped:
                return
            if not _stale(end, w):
                self.emit(self.lanes[w.key], w)

    def emit(self, lane: _Lane, w: _Pane | _Session) -> None:
        if isinstance(w, _Session):
            mine = self.sessions[w.key]
            mine.remove(w)
            if not mine:
                del self.sessions[w.key]
        else:
            del self.panes[(w.key, w.index)]
        lane.watermark = max(lane.watermark, w.end)
        items, w.items = w.items, []
        try:
            value = self.spec.agg(items)
        except Exception as exc:
            self.handler(items, exc)
            return
        self.output(Window(w.key, w.start, w.end, value))

    def output(self, window: Window) -> None:
        self.down.on_next(window)

    def arm(self, delay: float, action: Callable[[], None]) -> None:
        if self.timer is not None:
            self.timer.dispose()
        self.timer_due = self.now() + delay

        def fire() -> None:
            self.timer = None
            self.timer_due = math.inf
            action()

        self.timer = self.after(self.scheduler, delay, fire)

    def tick(self) -> None:
        self.close_through(self.lane, self.now() + TICK)
        heap = self.lane.heap
        if heap and not self.chain.stopped:
            self.arm(heap[0][0] - self.now(), self.tick)

    def idle_check(self) -> None:
        left = self.last_event + self.spec.idle - self.now()  # type: ignore[operator]
        if left > TICK:
            self.arm(left, self.idle_check)
        else:
            self.close_all()

    def on_completed(self) -> None:
        self.close_all()
        super().on_completed()

    def dispose(self) -> None:
        if self.timer is not None:
            self.timer.dispose()
            self.timer = None

    # -- snapshot -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        spec = self.spec
        config: dict[str, Any] = {"size": spec.size, "step": spec.step, "lateness": spec.lateness,
                  "idle": spec.idle, "event_time": spec.timestamp is not None}  # fmt: skip
        if self.per_key:
            config["watermark"] = "per_key"
        return config

    def closing_order(self) -> list[_Pane | _Session]:
        """The open windows in the order the heap will emit them."""
        seen: set[int] = set()
        out: list[_Pane | _Session] = []
        entries = [e for lane in self.all_lanes() for e in lane.heap]
        for end, _, w in sorted(entries, key=lambda e: (e[0], e[1])):
            if not _stale(end, w) and id(w) not in seen:
                seen.add(id(w))
                out.append(w)
        return out

    def state(self) -> dict[str, Any]:
        now, event_time = self.now(), self.spec.timestamp is not None
        shift = 0.0 if event_time else now

        def at(t: float) -> float:
            return t - shift

        rank = {id(w): i for i, w in enumerate(self.closing_order())}
        panes = [
            [rank[id(w)], encode(w.key), w.index if event_time else at(w.end), encode(w.items)]
            for w in self.panes.values()
        ]
        sessions = [
            [
                encode(k),
                [[rank[id(w)], at(w.start), at(w.last), at(w.end), encode(w.items)] for w in mine],
            ]
            for k, mine in self.sessions.items()
        ]
        idle = None
        if self.spec.idle is not None and self.timer is not None:
            idle = now - self.last_event
        mark = finite(self.lane.watermark) if event_time else rel(self.lane.watermark, now)
        body = {"watermark": mark, "panes": panes, "sessions": sessions, "idle_for": idle}
        if self.per_key:
            body["marks"] = [[encode(k), finite(lane.watermark)] for k, lane in self.lanes.items()]
        return body

    def load(self, state: dict[str, Any]) -> None:
        _Windows.dispose(self)  # the timer only (a join's dispose also drops its other side)
        now, event_time = self.now(), self.spec.timestamp is not None
        shift = 0.0 if event_time else now

        def at(t: float) -> float:
            return t + shift

        self.panes, self.sessions, self.lane, self.lanes = {}, {}, _Lane(), {}
        for key, mark in state.get("marks", []):
            self.lane_of(decode(key)).watermark = -math.inf if mark is None else mark
        ranked: list[tuple[int, _Pane | _Session]] = []
        for r, key, where, items in state["panes"]:
            k = decode(key)
            i = where if event_time else round((now + where - self.spec.size) / self.spec.step)
            start, end = self.grid.bounds(i)
            pane = self.panes[(k, i)] = _Pane(k, i, start, end, decode(items))
            ranked.append((r, pane))
        for key, mine in state["sessions"]:
            k = decode(key)
            got = self.sessions[k] = []
            for r, start, last, end, items in mine:
                w = _Session(k, at(start), at(last), at(end), decode(items))
                got.append(w)
                ranked.append((r, w))
        for _, window in sorted(ranked, key=lambda e: e[0]):
            heapq.heappush(self.lane_of(window.key).heap, (window.end, next(self.seq), window))
        mark = state["watermark"]
        stream_mark = -math.inf if mark is None else mark
        self.lane.watermark = stream_mark if event_time else unrel(mark, now)
        idle, idle_for = self.spec.idle, state["idle_for"]
        if idle is not None and idle_for is not None:
            self.last_event = now - idle_for
            self.arm(max(idle - idle_for, 0.0), self.idle_check)
        elif not event_time and self.lane.heap:
            self.arm(self.lane.heap[0][0] - now, self.tick)


class _WindowSpec(Spec):
    def __init__(
        self,
        kind: str,
        size: float,
        step: float,
        key: Callable[[Any], Hashable] | None,
        timestamp: Callable[[Any], float] | None,
        lateness: float,
        idle: float | None,
        agg: Callable[[list[Any]], Any],
        late: Any,
        scheduler: abc.SchedulerBase | None,
        on_error: OnError,
        stage_name: str | None = None,
        watermark: str = "stream",
    ) -> None:
        self.stage_name, self.watermark = stage_name, watermark
        if watermark not in ("stream", "per_key"):
            raise ValueError(f"watermark must be 'stream' or 'per_key', got {watermark!r}")
        if watermark == "per_key" and (key is None or timestamp is None):
            raise ValueError("watermark='per_key' needs event time: give key= and timestamp=")
        if not size > 0 or not step > 0:
            raise ValueError(f"window size and step must be > 0, got {size}, {step}")
        if lateness < 0:
            raise ValueError(f"lateness must be >= 0, got {lateness}")
        if idle is not None and not idle > 0:
            raise ValueError(f"idle must be > 0 seconds, got {idle}")
        self.kind, self.size, self.step, self.key = kind, float(size), float(step), key
        self.timestamp, self.lateness, self.idle, self.agg = timestamp, lateness, idle, agg
        self.late, self.scheduler = late, scheduler
        self.on_error = check_policy(on_error)

    def build(self, down: Any, chain: Chain) -> Stage:
        return _Windows(down, chain, self)


def _window(kind: str, size: float, step: float, **kw: Any) -> Callable[[Observable[Any]], Any]:
    agg = kw.pop("agg") or list
    return lean(_WindowSpec(kind, size, step, agg=agg, stage_name=kw.pop("name"), **kw))


def tumbling(
    size: float,
    *,
    key: Callable[[T], Hashable] | None = None,
    timestamp: Callable[[T], float] | None = None,
    lateness: float = 0.0,
    idle: float | None = None,
    agg: Callable[[list[T]], Any] | None = None,
    late: abc.ObserverBase[T] | Callable[[T], Any] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    name: str | None = None,
    watermark: Watermark = "stream",
) -> Callable[[Observable[T]], Observable[Window | Late[T]]]:
    """Fixed, non-overlapping windows ``[n*size, (n+1)*size)``.

    >>> import reactivex
    >>> reactivex.of(1, 2, 12, 3).pipe(
    ...     tumbling(10, timestamp=float, agg=count_of(), late=print)
    ... ).subscribe(print)  # doctest: +ELLIPSIS
    Window(key=None, start=0.0, end=10.0, value=2)
    3
    Window(key=None, start=10.0, end=20.0, value=1)
    <...>

    Per key, each key's own events close its windows (``watermark="per_key"``): ``b``'s
    time 25 neither closes ``a``'s window nor makes ``a``'s 3 late.

    >>> events = [("a", 1), ("b", 25), ("a", 3), ("a", 12)]
    >>> reactivex.from_iterable(events).pipe(tumbling(
    ...     10, key=lambda e: e[0], timestamp=lambda e: e[1], agg=count_of(),
    ...     watermark="per_key")).subscribe(print)  # doctest: +ELLIPSIS
    Window(key='a', start=0.0, end=10.0, value=2)
    Window(key='a', start=10.0, end=20.0, value=1)
    Window(key='b', start=20.0, end=30.0, value=1)
    <...>
    """
    return _window(
        "tumbling", size, size, key=key, timestamp=timestamp, lateness=lateness, idle=idle,
        agg=agg, late=late, scheduler=scheduler, on_error=on_error, name=name,
        watermark=watermark,
    )  # fmt: skip


def sliding(
    size: float,
    step: float,
    *,
    key: Callable[[T], Hashable] | None = None,
    timestamp: Callable[[T], float] | None = None,
    lateness: float = 0.0,
    idle: float | None = None,
    agg: Callable[[list[T]], Any] | None = None,
    late: abc.ObserverBase[T] | Callable[[T], Any] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    name: str | None = None,
    watermark: Watermark = "stream",
) -> Callable[[Observable[T]], Observable[Window | Late[T]]]:
    """Overlapping windows ``[k*step, k*step + size)`` (an event is in each of its windows).

    ``step`` must not exceed ``size``: with gaps between windows, the events falling in
    them would belong to no window and vanish silently (Kafka Streams refuses hopping
    windows whose advance exceeds their size for the same reason). To sample, filter first.
    An event that is late for some of its windows but not others counts in those still open
    (as in Flink); it goes to ``late`` only when all its windows have closed.

    >>> import reactivex
    >>> reactivex.of(1, 6).pipe(sliding(10, 5, timestamp=float, agg=count_of())).subscribe(
    ...     print)  # doctest: +ELLIPSIS
    Window(key=None, start=-5.0, end=5.0, value=1)
    Window(key=None, start=0.0, end=10.0, value=2)
    Window(key=None, start=5.0, end=15.0, value=1)
    <...>
    """
    if step > size:
        raise ValueError(
            f"sliding step ({step}) must be <= size ({size}): events between windows would be "
            "dropped silently"
        )
    return _window(
        "sliding", size, step, key=key, timestamp=timestamp, lateness=lateness, idle=idle,
        agg=agg, late=late, scheduler=scheduler, on_error=on_error, name=name,
        watermark=watermark,
    )  # fmt: skip


def session(
    gap: float,
    *,
    key: Callable[[T], Hashable] | None = None,
    timestamp: Callable[[T], float] | None = None,
    lateness: float = 0.0,
    idle: float | None = None,
    agg: Callable[[list[T]], Any] | None = None,
    late: abc.ObserverBase[T] | Callable[[T], Any] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    name: str | None = None,
    watermark: Watermark = "stream",
) -> Callable[[Observable[T]], Observable[Window | Late[T]]]:
    """Activity sessions: events closer than ``gap`` share a window ending ``gap`` after
    the last one. An event whose session would end at or before an emitted window's end
    is late.

    >>> import reactivex
    >>> reactivex.of(1, 2, 9).pipe(session(3, timestamp=float)).subscribe(print)
    ... # doctest: +ELLIPSIS
    Window(key=None, start=1.0, end=5.0, value=[1, 2])
    Window(key=None, start=9.0, end=12.0, value=[9])
    <...>
    """
    return _window(
        "session", gap, gap, key=key, timestamp=timestamp, lateness=lateness, idle=idle,
        agg=agg, late=late, scheduler=scheduler, on_error=on_error, name=name,
        watermark=watermark,
    )  # fmt: skip

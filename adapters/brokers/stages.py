"""Reference stateful stages for keyed workers: each is an operator whose per-subscription
state implements :class:`operators.state.Stateful` and registers itself when subscribed.

They are minimal models of the protocol (the keyed worker's doctests use them); the
library's own operators implement it too, and the keyed-worker tests and benchmark run
those (``dedupe``, ``group_by_key`` + ``rate_limit(timestamp=...)``, windows with
``watermark="per_key"``). Every one here keeps its state per key and decides on event time
only, so a pipeline gives the same answers whether all keys run in one process or are
spread over partitions (a watermark shared by all keys would not: it would advance
differently in each partition).

>>> import reactivex
>>> from operators.state import collecting
>>> events = [{"k": "a", "t": t} for t in (1, 2, 11, 3, 25)]
>>> out = []
>>> with collecting() as stages:
...     _ = reactivex.from_iterable(events).pipe(
...         tumbling_count(lambda e: e["k"], lambda e: e["t"], size=10, lateness=0)
...     ).subscribe(out.append)
>>> out  # doctest: +NORMALIZE_WHITESPACE
[{'key': 'a', 'start': 0, 'count': 2}, {'key': 'a', 'late': 3},
 {'key': 'a', 'start': 10, 'count': 1}]
>>> stages["tumbling_count-0"].snapshot()
{'windows': [['a', 20, 1]], 'marks': [['a', 25.0]]}
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc

from operators.state import register

__all__ = ["dedupe_by", "rate_limit_by", "tumbling_count"]

Key = Callable[[Any], Any]


def _stage(
    make: Callable[[abc.ObserverBase[Any]], Any], name: str | None, kind: str
) -> Callable[[Observable[Any]], Observable[Any]]:
    """An operator that builds one stage per subscription and registers it."""

    def operator(source: Observable[Any]) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            stage = make(observer)
            register(stage, name, kind)
            return source.subscribe(
                stage.on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator


def _hashable(key: Any) -> Any:
    """JSON turns tuples into lists; keys come back as tuples."""
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


class _TumblingCount:
    def __init__(
        self, down: abc.ObserverBase[Any], key: Key, time_of: Key, size: float, lateness: float
    ) -> None:
        self.down, self.key, self.time_of = down, key, time_of
        self.size, self.lateness = size, lateness
        self.windows: dict[Any, dict[float, int]] = {}
        self.marks: dict[Any, float] = {}

    def on_next(self, value: Any) -> None:
        k, t = self.key(value), float(self.time_of(value))
        start = math.floor(t / self.size) * self.size
        start = int(start) if float(start).is_integer() else start
        mark = self.marks.get(k, -math.inf)
        if start + self.size <= mark - self.lateness:
            self.down.on_next({"key": k, "late": self.time_of(value)})
            return
        counts = self.windows.setdefault(k, {})
        counts[start] = counts.get(start, 0) + 1
        if t > mark:
            self.marks[k] = t
            self._close(k, t - self.lateness)

    def _close(self, k: Any, watermark: float) -> None:
        counts = self.windows[k]
        for start in sorted(s for s in counts if s + self.size <= watermark):
            self.down.on_next({"key": k, "start": start, "count": counts.pop(start)})

    def snapshot(self) -> dict[str, Any]:
        return {
            "windows": [[k, s, n] for k, c in self.windows.items() for s, n in c.items()],
            "marks": [[k, m] for k, m in self.marks.items()],
        }

    def restore(self, state: bytes | dict[str, Any]) -> None:
        assert isinstance(state, dict)
        self.windows = {}
        for k, s, n in state["windows"]:
            self.windows.setdefault(_hashable(k), {})[s] = n
        self.marks = {_hashable(k): m for k, m in state["marks"]}


def tumbling_count(
    key: Key, time_of: Key, size: float, lateness: float = 0.0, name: str | None = None
) -> Callable[[Observable[Any]], Observable[dict[str, Any]]]:
    """Count events per key in event-time windows of ``size``; a key's window closes when
    that key's newest time passes its end by ``lateness``, emitting ``{key, start, count}``;
    an event for a closed window emits ``{key, late}``."""
    return _stage(
        lambda down: _TumblingCount(down, key, time_of, size, lateness), name, "tumbling_count"
    )


class _Dedupe:
    def __init__(self, down: abc.ObserverBase[Any], key: Key, memory: int) -> None:
        self.down, self.key, self.memory = down, key, memory
        self.seen: OrderedDict[Any, None] = OrderedDict()

    def on_next(self, value: Any) -> None:
        k = self.key(value)
        if k in self.seen:
            return
        self.seen[k] = None
        if len(self.seen) > self.memory:
            self.seen.popitem(last=False)
        self.down.on_next(value)

    def snapshot(self) -> dict[str, Any]:
        return {"seen": list(self.seen)}

    def restore(self, state: bytes | dict[str, Any]) -> None:
        assert isinstance(state, dict)
        self.seen = OrderedDict((_hashable(k), None) for k in state["seen"])


def dedupe_by(
    key: Key, memory: int = 100_000, name: str | None = None
) -> Callable[[Observable[Any]], Observable[Any]]:
    """Pass the first event of each key among the last ``memory`` distinct keys."""
    return _stage(lambda down: _Dedupe(down, key, memory), name, "dedupe")


class _RateLimit:
    def __init__(
        self, down: abc.ObserverBase[Any], key: Key, time_of: Key, burst: int, per: float
    ) -> None:
        self.down, self.key, self.time_of, self.burst, self.per = down, key, time_of, burst, per
        self.buckets: dict[Any, list[float]] = {}  # key -> [window start, count]

    def on_next(self, value: Any) -> None:
        k = self.key(value)
        start = math.floor(float(self.time_of(value)) / self.per) * self.per
        bucket = self.buckets.get(k)
        if bucket is None or bucket[0] != start:
            bucket = self.buckets[k] = [start, 0]
        if bucket[1] < self.burst:
            bucket[1] += 1
            self.down.on_next(value)

    def snapshot(self) -> dict[str, Any]:
        return {"buckets": [[k, s, n] for k, (s, n) in self.buckets.items()]}

    def restore(self, state: bytes | dict[str, Any]) -> None:
        assert isinstance(state, dict)
        self.buckets = {_hashable(k): [s, n] for k, s, n in state["buckets"]}


def rate_limit_by(
    key: Key, time_of: Key, burst: int, per: float, name: str | None = None
) -> Callable[[Observable[Any]], Observable[Any]]:
    """Pass at most ``burst`` events per key in each event-time window of ``per``."""
    return _stage(lambda down: _RateLimit(down, key, time_of, burst, per), name, "rate_limit")

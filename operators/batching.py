"""Batching by count, encoded bytes and time, whichever comes first; optionally per key.

- ``count``: at most this many events per batch.
- ``bytes``: the byte cap is checked *before* appending, so a batch never exceeds it,
  except an event that is oversize on its own, which travels alone.
- ``within``: seconds after a batch opens (its first event), it is flushed even if no
  new event arrives. One timer per open batch, never one per event: after a count flush
  the pending timer is re-armed for the next batch instead of being re-created.
- ``leading=True`` (with ``within``): batching costs nothing when there is nothing to
  batch. The first event of a quiet period is emitted at once, alone, and opens a
  ``within`` period; what arrives during it is gathered and flushed when it ends (or
  earlier by ``count``/``bytes``), which opens the next period. A period ending with
  nothing gathered makes the stream (or key) quiet again.
- Completion flushes the partial batch; an error drops it (like ``buffer_with_count``).
- Snapshot (``name=``, default ``"batch-<n>"`` / ``"batch_by_key-<n>"``): each partial
  batch (its key, items, byte count, how long ago it opened) and the time left on its
  timer, with the order of timers due at the same instant.

Operators assume one loop or thread. Time comes from ``scheduler`` (default: the one given
at subscribe time, else the running asyncio loop's).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from reactivex import Observable, abc

from ._core import TICK, Chain, Spec, clock, default_scheduler, lean
from ._snapshot import SnapshotStage, decode, encode
from .policy import OnError, check_policy, make_handler

__all__ = ["batch", "batch_by_key", "encoded_size"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
_armed = itertools.count()  # timers due at the same instant fire in the order they were armed


def encoded_size(item: Any) -> int:
    """Encoded size in bytes: ``Event.size``, ``len()`` of bytes/str, else orjson length.

    >>> encoded_size(b"abc"), encoded_size({"a": 1})
    (3, 7)
    """
    size = getattr(item, "size", None)
    if isinstance(size, int):
        return size
    if isinstance(item, bytes | bytearray | memoryview):
        return len(item)
    if isinstance(item, str):
        return len(item.encode())
    import orjson

    return len(orjson.dumps(item))


def _check(count: int | None, max_bytes: int | None, within: float | None) -> None:
    if count is None and max_bytes is None and within is None:
        raise ValueError("batch needs at least one of count, bytes, within")
    if count is not None and count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"bytes must be >= 1, got {max_bytes}")
    if within is not None and not within > 0:
        raise ValueError(f"within must be > 0 seconds, got {within}")


class _Buffer:
    """One open batch with its byte count and (at most one) timer."""

    __slots__ = ("armed", "buf", "due", "emit", "key", "nbytes", "opened", "owner", "timer")

    def __init__(self, owner: _BatchStage, emit: Callable[[list[Any]], None]) -> None:
        self.owner = owner
        self.emit = emit
        self.key: Any = None
        self.buf: list[Any] = []
        self.nbytes = 0
        self.opened = 0.0
        self.due = 0.0  # when the timer fires, and ``armed`` its rank among timers due then
        self.armed = 0
        self.timer: abc.DisposableBase | None = None

    def schedule(self, seconds: float, fire: Callable[..., None]) -> None:
        o = self.owner
        self.due, self.armed = o.now() + seconds, next(_armed)
        self.timer = o.scheduler.schedule_relative(seconds, fire)

    def open(self) -> None:
        o = self.owner
        self.opened = o.now()
        if self.timer is None:
            self.schedule(o.within or 0.0, self._fire)

    def lead(self) -> None:
        """Leading edge: start a ``within`` period now."""
        self.opened = self.owner.now()
        self.schedule(self.owner.within or 0.0, self._period_end)

    def _period_end(self, _: Any = None, __: Any = None) -> None:
        self.timer = None
        o = self.owner
        if o.chain.stopped or not self.buf:
            o.idle(self)
            return
        self.lead()
        self.flush()

    def _fire(self, _: Any = None, __: Any = None) -> None:
        self.timer = None
        o = self.owner
        if o.chain.stopped or not self.buf:
            o.idle(self)
            return
        left = o.within - (o.now() - self.opened)  # type: ignore[operator]
        if left > TICK:  # a smaller remainder would be scheduled at "now" (see TICK)
            self.schedule(left, self._fire)
        else:
            self.flush()

    def flush(self) -> None:
        if self.owner.chain.stopped:
            return
        out = self.buf.copy()
        self.buf.clear()
        self.nbytes = 0
        if out:
            self.emit(out)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.dispose()
            self.timer = None


class _BatchStage(SnapshotStage):
    def __init__(self, down: Any, chain: Chain, spec: _BatchSpec) -> None:
        super().__init__(down, chain)
        self.stage_name = spec.stage_name
        self.leading = spec.leading
        self.count = spec.count or sys.maxsize
        self.max_bytes = spec.max_bytes
        self.within = spec.within
        self.size = spec.size
        self.handler = make_handler(spec.on_error, self.fail)
        self.scheduler = default_scheduler(spec.scheduler, chain.scheduler)
        self.now = clock(self.scheduler)

    def idle(self, b: _Buffer) -> None:
        return None

    def add(self, b: _Buffer, x: Any) -> None:
        buf = b.buf
        if self.leading and b.timer is None:  # quiet: this one goes at once, alone
            b.lead()
            b.emit([x])
            return
        if self.max_bytes is not None:
            try:
                n = self.size(x)
            except Exception as exc:
                self.handler(x, exc)
                return
            if buf and b.nbytes + n > self.max_bytes:
                b.flush()
            b.nbytes += n
        if not buf and self.within is not None and not self.leading:
            b.open()
        buf.append(x)
        if len(buf) >= self.count or (self.max_bytes is not None and b.nbytes >= self.max_bytes):
            b.flush()

    # -- snapshot ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "count": None if self.count == sys.maxsize else self.count,
            "bytes": self.max_bytes,
            "within": self.within,
            "leading": self.leading,
        }

    def buffers_state(self, buffers: list[_Buffer]) -> list[dict[str, Any]]:
        """Each buffer holding items or a timer, in order; ``timer`` is ``[rank, seconds
        left]``, the rank ordering timers due at the same instant."""
        now = self.now()
        timed = sorted(
            (b for b in buffers if b.timer is not None), key=lambda b: (round(b.due, 6), b.armed)
        )
        rank = {id(b): i for i, b in enumerate(timed)}
        return [
            {"key": encode(b.key), "items": encode(b.buf), "bytes": b.nbytes,
             "opened_ago": now - b.opened,
             "timer": None if b.timer is None else [rank[id(b)], b.due - now]}
            for b in buffers
            if b.buf or b.timer is not None
        ]  # fmt: skip

    def load_buffers(self, pairs: list[tuple[_Buffer, dict[str, Any]]]) -> None:
        now, timers = self.now(), []
        for b, state in pairs:
            b.cancel()
            b.buf[:] = decode(state["items"])  # in place: a fused function holds this list
            b.nbytes = state["bytes"]
            b.opened = now - state["opened_ago"]
            if state["timer"] is not None:
                timers.append((state["timer"], b))
        for (_, left), b in sorted(timers, key=lambda t: t[0][0]):
            b.schedule(max(left, 0.0), b._period_end if self.leading else b._fire)


class _Single(_BatchStage):
    def __init__(self, down: Any, chain: Chain, spec: _BatchSpec) -> None:
        super().__init__(down, chain, spec)
        self.b = _Buffer(self, down.on_next)

    def on_next(self, value: Any) -> None:
        self.add(self.b, value)

    def lead_one(self, x: Any) -> None:
        """Leading edge, quiet: ``x`` goes at once, alone, and opens a period."""
        self.b.lead()
        self.down.on_next([x])

    stage_kind = "batch"

    def state(self) -> dict[str, Any]:
        return {"batches": self.buffers_state([self.b])}

    def load(self, state: dict[str, Any]) -> None:
        self.b.cancel()
        self.b.buf.clear()
        self.b.nbytes = 0
        self.load_buffers([(self.b, one) for one in state["batches"]])

    def inline(self, prefix: str) -> tuple[list[str], dict[str, Any]] | None:
        if self.max_bytes is not None:
            return None
        b = self.b
        if self.leading:
            return [
                f"if {prefix}b.timer is None:",
                f"    {prefix}lead(x)",
                "else:",
                f"    {prefix}buf.append(x)",
                f"    if len({prefix}buf) >= {prefix}n:",
                f"        {prefix}flush()",
            ], {
                f"{prefix}b": b,
                f"{prefix}lead": self.lead_one,
                f"{prefix}buf": b.buf,
                f"{prefix}n": self.count,
                f"{prefix}flush": b.flush,
            }
        lines = []
        if self.within is not None:
            lines += [f"if not {prefix}buf:", f"    {prefix}open()"]
        lines += [
            f"{prefix}buf.append(x)",
            f"if len({prefix}buf) >= {prefix}n:",
            f"    {prefix}flush()",
        ]
        return lines, {
            f"{prefix}buf": b.buf,
            f"{prefix}open": b.open,
            f"{prefix}n": self.count,
            f"{prefix}flush": b.flush,
        }

    def on_completed(self) -> None:
        self.b.flush()
        super().on_completed()

    def dispose(self) -> None:
        self.b.cancel()


class _Keyed(_BatchStage):
    stage_kind = "batch_by_key"

    def __init__(self, down: Any, chain: Chain, spec: _BatchSpec) -> None:
        super().__init__(down, chain, spec)
        self.key = spec.key
        self.buffers: dict[Any, _Buffer] = {}

    def on_next(self, value: Any) -> None:
        try:
            k = self.key(value)  # type: ignore[misc]
        except Exception as exc:
            self.handler(value, exc)
            return
        b = self.buffers.get(k)
        if b is None:
            b = self.buffer(k)
        self.add(b, value)
        if not b.buf and b.timer is None:
            del self.buffers[k]

    def buffer(self, k: Any) -> _Buffer:
        on_next = self.down.on_next

        def emit(items: list[Any], k: Any = k) -> None:
            on_next((k, items))

        b = self.buffers[k] = _Buffer(self, emit)
        b.key = k
        return b

    def idle(self, b: _Buffer) -> None:
        if not b.buf and self.buffers.get(b.key) is b:
            del self.buffers[b.key]

    def state(self) -> dict[str, Any]:
        return {"batches": self.buffers_state(list(self.buffers.values()))}

    def load(self, state: dict[str, Any]) -> None:
        self.dispose()
        self.buffers = {}
        self.load_buffers([(self.buffer(decode(one["key"])), one) for one in state["batches"]])

    def on_completed(self) -> None:
        for b in list(self.buffers.values()):
            b.flush()
        super().on_completed()

    def dispose(self) -> None:
        for b in self.buffers.values():
            b.cancel()


class _BatchSpec(Spec):
    name = "batch"

    def __init__(
        self,
        count: int | None,
        max_bytes: int | None,
        within: float | None,
        size: Callable[[Any], int],
        key: Callable[[Any], Any] | None,
        scheduler: abc.SchedulerBase | None,
        on_error: OnError,
        leading: bool = False,
        stage_name: str | None = None,
    ) -> None:
        _check(count, max_bytes, within)
        if leading and within is None:
            raise ValueError("leading=True needs within (the period that gathers followers)")
        self.leading, self.stage_name = leading, stage_name
        self.count, self.max_bytes, self.within = count, max_bytes, within
        self.size, self.key, self.scheduler = size, key, scheduler
        self.on_error = check_policy(on_error)

    def build(self, down: Any, chain: Chain) -> _BatchStage:
        if self.key is None:
            return _Single(down, chain, self)
        return _Keyed(down, chain, self)


def batch(
    count: int | None = None,
    bytes: int | None = None,
    within: float | None = None,
    *,
    leading: bool = False,
    size: Callable[[T], int] = encoded_size,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    name: str | None = None,
) -> Callable[[Observable[T]], Observable[list[T]]]:
    """Group events into lists, flushed by ``count``, ``bytes`` or ``within`` seconds.

    ``size`` measures an event for the byte cap (default :func:`encoded_size`); its
    exceptions follow ``on_error``. ``leading=True`` emits the first event of a quiet
    period at once and gathers only what follows within ``within`` (module docstring).

    >>> import reactivex
    >>> reactivex.of(1, 2, 3, 4, 5).pipe(batch(count=2)).subscribe(print)
    ... # doctest: +ELLIPSIS
    [1, 2]
    [3, 4]
    [5]
    <...>
    >>> reactivex.of(b"aa", b"bbbb", b"c").pipe(batch(bytes=4)).subscribe(print)
    ... # doctest: +ELLIPSIS
    [b'aa']
    [b'bbbb']
    [b'c']
    <...>
    """
    return lean(_BatchSpec(count, bytes, within, size, None, scheduler, on_error, leading, name))


def batch_by_key(
    key: Callable[[T], K],
    count: int | None = None,
    bytes: int | None = None,
    within: float | None = None,
    *,
    leading: bool = False,
    size: Callable[[T], int] = encoded_size,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    name: str | None = None,
) -> Callable[[Observable[T]], Observable[tuple[K, list[T]]]]:
    """One batch per key; emits ``(key, items)``. Same flush rules as :func:`batch`.

    >>> import reactivex
    >>> reactivex.of("a1", "b1", "a2").pipe(batch_by_key(lambda s: s[0], count=2)).subscribe(
    ...     print)  # doctest: +ELLIPSIS
    ('a', ['a1', 'a2'])
    ('b', ['b1'])
    <...>
    """
    return lean(_BatchSpec(count, bytes, within, size, key, scheduler, on_error, leading, name))

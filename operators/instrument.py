"""Opt-in instrumentation: named stages with counters, for pipeline graphs (issue 7).

Off by default and free when off: :func:`instrumented` checks the switch when the
pipeline is *built* and then returns the operator unchanged, so nothing is added per
event. Switch it on before building a pipeline::

    from operators import instrument
    with instrument.enabled():                  # or instrument.enable() / disable()
        pipeline = source.pipe(instrument.instrumented("batcher", batch(count=100)))
    ...
    instrument.stats()["batcher"]               # StageStats(...)

API:

- ``enable()``, ``disable()``, ``is_enabled()``, ``enabled()`` (context manager).
- ``instrumented(name, op=None, batches=False)``: an operator. With ``op`` it wraps
  that operator and counts events going in and coming out; without, it is a
  pass-through probe. ``batches=True`` means ``op`` emits lists (``batch``), so
  ``buffer_depth`` (events held inside ``op``) is ``events_in - items_out``.
- ``stats()``: ``{name: StageStats}``, live objects updated in place; ``reset()`` clears.

``StageStats`` fields: ``events_in``, ``events_out``, ``items_out``, ``first``/``last``
(monotonic seconds of the first and latest input), ``rate`` (inputs per second over that
span) and ``buffer_depth``. Counters assume one loop or thread, like every operator.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from reactivex import Observable

from ._core import PureSpec, lean

__all__ = [
    "StageStats",
    "disable",
    "enable",
    "enabled",
    "instrumented",
    "is_enabled",
    "reset",
    "stats",
]

_on = False
_stats: dict[str, StageStats] = {}


@dataclass
class StageStats:
    """Counters of one named stage."""

    name: str
    events_in: int = 0
    events_out: int = 0
    items_out: int = 0
    first: float = 0.0
    last: float = 0.0
    batches: bool = False

    @property
    def rate(self) -> float:
        """Input events per second between the first and latest input."""
        span = self.last - self.first
        return self.events_in / span if span > 0 else 0.0

    @property
    def buffer_depth(self) -> int:
        """Events held inside the stage (batching stages only; else 0)."""
        return self.events_in - self.items_out if self.batches else 0


def enable() -> None:
    """Instrument pipelines built from now on."""
    global _on
    _on = True


def disable() -> None:
    """Stop instrumenting pipelines built from now on (built ones keep counting)."""
    global _on
    _on = False


def is_enabled() -> bool:
    return _on


@contextlib.contextmanager
def enabled() -> Iterator[None]:
    """Instrument the pipelines built inside the block.

    >>> with enabled():
    ...     is_enabled()
    True
    >>> is_enabled()
    False
    """
    global _on
    before, _on = _on, True
    try:
        yield
    finally:
        _on = before


def stats() -> dict[str, StageStats]:
    """The counters of every instrumented stage, by name."""
    return dict(_stats)


def reset() -> None:
    """Forget every stage's counters."""
    _stats.clear()


def instrumented(
    name: str, op: Callable[[Observable[Any]], Observable[Any]] | None = None, batches: bool = False
) -> Callable[[Observable[Any]], Observable[Any]]:
    """Count events into and out of ``op`` under ``name`` (identity when switched off).

    >>> import reactivex
    >>> from operators import batch
    >>> with enabled():
    ...     op = instrumented("b", batch(count=2), batches=True)
    >>> _ = reactivex.of(1, 2, 3).pipe(op).subscribe()
    >>> s = stats()["b"]
    >>> s.events_in, s.events_out, s.items_out
    (3, 2, 3)
    >>> instrumented("off") is not None  # switched off: the operator is returned unchanged
    True
    """
    if not _on:
        return op if op is not None else _identity
    s = _stats[name] = StageStats(name, batches=batches)
    now = time.monotonic

    def count_in(x: Any) -> Any:
        t = now()
        if not s.events_in:
            s.first = t
        s.last = t
        s.events_in += 1
        return x

    def count_out(x: Any) -> Any:
        s.events_out += 1
        s.items_out += len(x) if batches else 1
        return x

    before = lean(PureSpec("map", count_in, "fail"))
    after = lean(PureSpec("map", count_out, "fail"))
    if op is None:

        def probe(x: Any) -> Any:
            count_in(x)
            return count_out(x)

        return lean(PureSpec("map", probe, "fail"))
    return lambda source: after(op(before(source)))


def _identity(source: Observable[Any]) -> Observable[Any]:
    return source

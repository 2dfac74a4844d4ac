"""Time-based thinning: ``throttle`` (first or latest), ``debounce`` and ``sample``.

One timer at most per operator instance (``throttle(latest=False)`` needs none), re-armed
rather than re-created per event; disposal and termination cancel it. Time comes from
``scheduler`` (default: the subscribe-time one, else the running asyncio loop's).
Operators assume one loop or thread.

Snapshot (``name=``, default ``"throttle-<n>"``, ``"debounce-<n>"``, ``"sample-<n>"``): the
pending value and the time left on the timer (for ``throttle(latest=False)``, the time left
in the current window); restore re-arms the timer for that remainder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc

from ._core import TICK, Chain, Spec, Stage, clock, default_scheduler, lean
from ._snapshot import SnapshotStage, decode, encode

__all__ = ["debounce", "sample", "throttle"]

T = TypeVar("T")
_NONE: Any = object()


def _positive(name: str, seconds: float) -> float:
    if not seconds > 0:
        raise ValueError(f"{name} must be > 0 seconds, got {seconds}")
    return seconds


class _Timed(SnapshotStage):
    def __init__(self, down: Any, chain: Chain, spec: _TimedSpec) -> None:
        super().__init__(down, chain)
        self.stage_name = spec.stage_name
        self.seconds = spec.seconds
        self.scheduler = default_scheduler(spec.scheduler, chain.scheduler)
        self.now = clock(self.scheduler)
        self.timer: abc.DisposableBase | None = None
        self.pending: Any = _NONE
        self.due = 0.0  # when the timer fires, on the scheduler's clock

    def arm(self, seconds: float, action: Callable[[], None]) -> None:
        def fire() -> None:
            self.timer = None
            action()

        self.due = self.now() + seconds
        self.timer = self.after(self.scheduler, seconds, fire)

    # -- snapshot: the pending value and the time left on the timer --------------------
    def config(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def state(self) -> dict[str, Any]:
        left = self.due - self.now() if self.timer is not None else None
        pending = None if self.pending is _NONE else [encode(self.pending)]
        return {"pending": pending, "left": left}

    def load(self, state: dict[str, Any]) -> None:
        self.dispose()
        self.pending = _NONE if state["pending"] is None else decode(state["pending"][0])
        if state["left"] is not None:
            self.rearm(state["left"])

    def rearm(self, left: float) -> None:  # pragma: no cover - overridden where timed
        return None

    def dispose(self) -> None:
        if self.timer is not None:
            self.timer.dispose()
            self.timer = None

    def flush_pending(self) -> None:
        value, self.pending = self.pending, _NONE
        if value is not _NONE:
            self.down.on_next(value)

    def on_completed(self) -> None:
        self.flush_pending()
        super().on_completed()


class _ThrottleFirst(_Timed):
    stage_kind = "throttle"
    until = float("-inf")

    def on_next(self, value: Any) -> None:
        now = self.now()
        if now >= self.until:
            self.until = now + self.seconds
            self.down.on_next(value)

    def config(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "latest": False}

    def state(self) -> dict[str, Any]:
        left = self.until - self.now()
        return {"pending": None, "left": left if left > 0 else None}

    def load(self, state: dict[str, Any]) -> None:
        left = state["left"]
        self.until = float("-inf") if left is None else self.now() + left


class _ThrottleLatest(_Timed):
    stage_kind = "throttle"

    def config(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "latest": True}

    def rearm(self, left: float) -> None:
        self.arm(left, self.window_end)

    def on_next(self, value: Any) -> None:
        if self.timer is None:
            self.down.on_next(value)
            self.arm(self.seconds, self.window_end)
        else:
            self.pending = value

    def window_end(self) -> None:
        if self.pending is not _NONE:
            self.flush_pending()
            self.arm(self.seconds, self.window_end)


class _Debounce(_Timed):
    stage_kind = "debounce"
    deadline = 0.0

    def state(self) -> dict[str, Any]:
        pending = None if self.pending is _NONE else [encode(self.pending)]
        return {"pending": pending, "left": self.deadline - self.now() if pending else None}

    def rearm(self, left: float) -> None:
        self.deadline = self.now() + left
        self.arm(left, self.check)

    def on_next(self, value: Any) -> None:
        self.pending = value
        self.deadline = self.now() + self.seconds
        if self.timer is None:
            self.arm(self.seconds, self.check)

    def check(self) -> None:
        left = self.deadline - self.now()
        if left > TICK:
            self.arm(left, self.check)
        else:
            self.flush_pending()


class _Sample(_Timed):
    stage_kind = "sample"

    def rearm(self, left: float) -> None:
        self.arm(left, self.tick)

    def __init__(self, down: Any, chain: Chain, spec: _TimedSpec) -> None:
        super().__init__(down, chain, spec)
        self.arm(self.seconds, self.tick)

    def on_next(self, value: Any) -> None:
        self.pending = value

    def tick(self) -> None:
        self.flush_pending()
        self.arm(self.seconds, self.tick)


class _TimedSpec(Spec):
    def __init__(
        self,
        kind: type[_Timed],
        seconds: float,
        scheduler: abc.SchedulerBase | None,
        stage_name: str | None = None,
    ) -> None:
        self.kind, self.stage_name = kind, stage_name
        self.seconds = _positive("seconds", seconds)
        self.scheduler = scheduler

    def build(self, down: Any, chain: Chain) -> Stage:
        return self.kind(down, chain, self)


def throttle(
    seconds: float,
    latest: bool = False,
    *,
    scheduler: abc.SchedulerBase | None = None,
    name: str | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """At most one event per ``seconds``.

    ``latest=False``: the first event of each window passes, the rest are dropped (no timer).
    ``latest=True``: the first passes at once and the latest one seen during the window is
    emitted when the window ends (and on completion), which opens the next window.

    >>> import reactivex
    >>> reactivex.of(1, 2, 3).pipe(throttle(10.0)).subscribe(print)  # doctest: +ELLIPSIS
    1
    <...>
    """
    return lean(_TimedSpec(_ThrottleLatest if latest else _ThrottleFirst, seconds, scheduler, name))


def debounce(
    seconds: float, *, scheduler: abc.SchedulerBase | None = None, name: str | None = None
) -> Callable[[Observable[T]], Observable[T]]:
    """Emit an event once ``seconds`` pass without a newer one; completion emits the last.

    >>> import reactivex
    >>> reactivex.of(1, 2, 3).pipe(debounce(0.5)).subscribe(print)  # doctest: +ELLIPSIS
    3
    <...>
    """
    return lean(_TimedSpec(_Debounce, seconds, scheduler, name))


def sample(
    seconds: float, *, scheduler: abc.SchedulerBase | None = None, name: str | None = None
) -> Callable[[Observable[T]], Observable[T]]:
    """Every ``seconds``, emit the latest event if a new one arrived; completion emits it too.

    >>> import reactivex
    >>> reactivex.of(1, 2, 3).pipe(sample(5.0)).subscribe(print)  # doctest: +ELLIPSIS
    3
    <...>
    """
    return lean(_TimedSpec(_Sample, seconds, scheduler, name))

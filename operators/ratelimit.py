"""A token-bucket rate limit that drops or delays.

The bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; each
event takes one. So in any interval of length ``T`` at most ``burst + rate * T`` events
pass. ``mode="drop"`` discards an event when the bucket is empty (counted in
``RateLimited`` dead letters if ``on_drop`` is given); ``mode="delay"`` queues it (at most
``max_queue``, beyond which :class:`RateLimitError` follows ``on_error``) and releases it
when a token is available, using one timer for the head of the queue. Completion waits
for the queue to drain. Operators assume one loop or thread.

**Event time** (``timestamp=f``): the bucket refills by the events' own times instead of the
clock, so the same events give the same verdicts however fast they arrive, in any process
(what a keyed worker group needs to replay and hand a partition over). The bucket's clock
is the largest time seen: an out-of-order event refills nothing and takes a token if one is
left. Only ``mode="drop"``: nothing could release a delayed event before the next one.

Snapshot (``name=``, default ``"rate_limit-<n>"``): the tokens in the bucket at snapshot time
and, in delay mode, the queued events; the release timer is re-armed from them on restore.
On event time: the tokens and the bucket's event time, as they are.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from reactivex import Observable, abc

from streams.errors import PipelineError

from ._core import TICK, Chain, Spec, Stage, clock, default_scheduler, lean
from ._snapshot import SnapshotStage, decode, encode, finite
from .policy import OnError, check_policy, make_handler

__all__ = ["RateLimitError", "rate_limit"]

T = TypeVar("T")


class RateLimitError(PipelineError):
    """The delay queue of :func:`rate_limit` is full."""


def _event_time(t: Any) -> float:
    """``t`` as a finite time; raises (for ``on_error``) otherwise: an infinite time would
    stop the bucket refilling for ever, a NaN one would pass unjudged."""
    time = float(t)
    if not math.isfinite(time):
        raise ValueError(f"timestamp must be a finite number, got {time!r}")
    return time


class _Bucket(SnapshotStage):
    stage_kind = "rate_limit"

    def __init__(self, down: Any, chain: Chain, spec: _RateSpec) -> None:
        super().__init__(down, chain)
        self.spec = spec
        self.stage_name = spec.stage_name
        self.scheduler = default_scheduler(spec.scheduler, chain.scheduler)
        self.now = clock(self.scheduler)
        self.tokens = float(spec.burst)
        self.timestamp = spec.timestamp
        self.stamp = self.now() if self.timestamp is None else -math.inf
        self.queue: deque[Any] = deque()
        self.timer: abc.DisposableBase | None = None
        self.completed = False
        self.handler = make_handler(spec.on_error, self.fail)
        self.on_drop = spec.on_drop

    def refill(self) -> None:
        self.refill_to(self.now())

    def refill_to(self, now: float) -> None:
        if now > self.stamp:
            gained = (now - self.stamp) * self.spec.rate
            self.tokens = min(float(self.spec.burst), self.tokens + gained)
            self.stamp = now

    def on_next(self, value: Any) -> None:
        if self.timestamp is None:
            self.refill()
        else:
            try:
                self.refill_to(_event_time(self.timestamp(value)))
            except Exception as exc:
                self.handler(value, exc)
                return
        if not self.queue and self.tokens >= 1:
            self.tokens -= 1
            self.down.on_next(value)
        elif self.spec.mode == "drop":
            if self.on_drop is not None:
                try:
                    self.on_drop(value)
                except Exception as exc:
                    self.handler(value, exc)
        elif len(self.queue) >= self.spec.max_queue:
            self.handler(value, RateLimitError(f"delay queue full ({self.spec.max_queue})"))
        else:
            self.queue.append(value)
            self.arm()

    def arm(self) -> None:
        if self.timer is None and self.queue:
            wait = (1 - self.tokens) / self.spec.rate
            self.timer = self.after(self.scheduler, wait, self.release)

    def release(self) -> None:
        self.timer = None
        self.refill()
        due = 1 - TICK * self.spec.rate  # the timer may fire up to TICK early
        while self.queue and self.tokens >= due:
            self.tokens -= 1
            self.down.on_next(self.queue.popleft())
            if self.chain.stopped:
                return
        if self.queue:
            self.arm()
        elif self.completed:
            super().on_completed()

    def on_completed(self) -> None:
        if self.queue:
            self.completed = True
        else:
            super().on_completed()

    def config(self) -> dict[str, Any]:
        spec = self.spec
        config: dict[str, Any] = {"rate": spec.rate, "burst": spec.burst, "mode": spec.mode}
        if self.timestamp is not None:
            config["event_time"] = True
        return config

    def state(self) -> dict[str, Any]:
        if self.timestamp is not None:
            return {"tokens": self.tokens, "stamp": finite(self.stamp), "queue": []}
        tokens = min(
            float(self.spec.burst), self.tokens + (self.now() - self.stamp) * self.spec.rate
        )
        return {"tokens": tokens, "queue": encode(list(self.queue))}

    def load(self, state: dict[str, Any]) -> None:
        self.dispose()
        self.tokens, self.stamp = float(state["tokens"]), self.now()
        if self.timestamp is not None:
            stamp = state["stamp"]
            self.stamp = -math.inf if stamp is None else float(stamp)
        self.queue.extend(decode(state["queue"]))
        self.arm()

    def dispose(self) -> None:
        self.queue.clear()
        if self.timer is not None:
            self.timer.dispose()
            self.timer = None


class _RateSpec(Spec):
    name = "rate_limit"

    def __init__(
        self,
        rate: float,
        burst: int,
        mode: str,
        max_queue: int,
        on_drop: Callable[[Any], Any] | None,
        scheduler: abc.SchedulerBase | None,
        on_error: OnError,
        stage_name: str | None = None,
        timestamp: Callable[[Any], float] | None = None,
    ) -> None:
        self.stage_name, self.timestamp = stage_name, timestamp
        if not rate > 0:
            raise ValueError(f"rate must be > 0 events/second, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if mode not in ("drop", "delay"):
            raise ValueError(f"mode must be 'drop' or 'delay', got {mode!r}")
        if mode == "delay" and timestamp is not None:
            raise ValueError("an event-time rate_limit (timestamp=) can only drop: mode='drop'")
        self.rate, self.burst, self.mode, self.max_queue = rate, burst, mode, max_queue
        self.on_drop, self.scheduler = on_drop, scheduler
        self.on_error = check_policy(on_error)

    def build(self, down: Any, chain: Chain) -> Stage:
        return _Bucket(down, chain, self)


def rate_limit(
    rate: float,
    burst: int = 1,
    mode: Literal["drop", "delay"] = "drop",
    *,
    max_queue: int = 10_000,
    on_drop: Callable[[T], Any] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    name: str | None = None,
    timestamp: Callable[[T], float] | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Let at most ``rate`` events per second through, with bursts up to ``burst``; seconds
    of the scheduler's clock, or of the events' own times with ``timestamp=`` (drop only).

    >>> from streams import from_iterable
    >>> from reactivex.testing import TestScheduler
    >>> got = []
    >>> limit = rate_limit(1.0, burst=2, on_drop=print, scheduler=TestScheduler())
    >>> _ = from_iterable([1, 2, 3, 4]).pipe(limit).subscribe(got.append)
    3
    4
    >>> got
    [1, 2]
    >>> from_iterable([0, 0, 0, 1.5, 1.6, 9]).pipe(
    ...     rate_limit(1.0, burst=2, timestamp=float)).subscribe(print)  # doctest: +ELLIPSIS
    0
    0
    1.5
    9
    <...>
    """
    spec = _RateSpec(rate, burst, mode, max_queue, on_drop, scheduler, on_error, name, timestamp)
    return lean(spec)

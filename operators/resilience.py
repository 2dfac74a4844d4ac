"""Resilience: the shared error policy (re-exported) and bounded retry with backoff.

See :mod:`operators.policy` for ``on_error="fail" | "skip" | dead-letter``.
Operators assume one loop or thread.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SerialDisposable

from ._core import default_scheduler
from .backoff import Backoff
from .policy import DeadLetter, OnError

__all__ = ["Backoff", "DeadLetter", "OnError", "backoff_delays", "retry"]

T = TypeVar("T")


def backoff_delays(
    attempts: int, base: float, cap: float, jitter: bool, rng: random.Random | None = None
) -> list[float]:
    """The delays before each retry: ``min(cap, base * 2**n)``, scaled into [50%, 100%]
    by jitter so that many clients do not retry in lockstep (:class:`Backoff`'s delays).

    >>> backoff_delays(4, 0.5, 3.0, jitter=False)
    [0.5, 1.0, 2.0, 3.0]
    """
    policy = Backoff(initial=base, maximum=cap, jitter=0.5 if jitter else 0.0, rng=rng)
    return policy.delays(attempts)


def retry(
    attempts: int = 5,
    base: float = 0.1,
    cap: float = 10.0,
    *,
    jitter: bool = True,
    when: Callable[[Exception], bool] = lambda exc: True,
    scheduler: abc.SchedulerBase | None = None,
    rng: random.Random | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Resubscribe to the source after an error, waiting with exponential backoff.

    At most ``attempts`` retries in a row; an event received resets the count (a live
    stream that recovered starts afresh). Errors for which ``when(error)`` is false, and
    the error after the last attempt, end the stream. Disposal cancels a pending retry.

    >>> import reactivex
    >>> from reactivex.testing import TestScheduler
    >>> calls = []
    >>> def flaky(observer, scheduler=None):
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         observer.on_error(ConnectionError("down"))
    ...     else:
    ...         observer.on_next("ok"); observer.on_completed()
    >>> ts = TestScheduler()
    >>> _ = reactivex.create(flaky).pipe(retry(jitter=False)).subscribe(print, scheduler=ts)
    >>> ts.advance_by(10.0)
    ok
    >>> len(calls)
    3
    """
    if attempts < 0:
        raise ValueError(f"attempts must be >= 0, got {attempts}")
    if not base > 0 or cap < base:
        raise ValueError(f"need 0 < base <= cap, got base={base}, cap={cap}")
    r = rng or random.Random()

    def apply(source: Observable[T]) -> Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], sched: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            serial = SerialDisposable()  # the current subscription
            timer = SerialDisposable()  # the pending retry, if any
            policy = Backoff(
                initial=base, maximum=cap, jitter=0.5 if jitter else 0.0,
                max_attempts=attempts, rng=r,
            )  # fmt: skip
            stopped = False
            sch = default_scheduler(scheduler, sched)

            def on_next(value: T) -> None:
                policy.reset()
                observer.on_next(value)

            def on_error(error: Exception) -> None:
                nonlocal stopped
                delay = None if stopped or not when(error) else policy.next_delay()
                if delay is None:
                    stopped = True
                    observer.on_error(error)
                    return
                timer.disposable = sch.schedule_relative(delay, lambda *_: attach())

            def attach() -> None:
                if not stopped:
                    serial.disposable = source.subscribe(
                        on_next, on_error, observer.on_completed, scheduler=sched
                    )

            attach()

            def dispose() -> None:
                nonlocal stopped
                stopped = True
                timer.dispose()
                serial.dispose()

            return Disposable(dispose)

        return Observable(subscribe)

    return apply

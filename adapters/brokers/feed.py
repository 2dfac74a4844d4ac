"""Observables backed by an asyncio task: how networked subscriptions are delivered.

A subscription to a NATS or Redis broker is a loop that awaits the server. Subscribing to
the observable starts that loop as a task on the running event loop; disposing cancels it.
The loop calls ``emit`` for each event; when it returns the observer completes, when it
raises the observer gets the error. A faulty observer (``on_next`` raising) ends only its
own subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from streams import Event

__all__ = ["Body", "Emit", "TaskFeeds", "raise_if_cancelled"]

Emit = Callable[[Event], None]
Body = Callable[[Emit], Awaitable[None]]


def _nothing() -> None:
    return None


def raise_if_cancelled() -> None:
    """Re-raise a cancellation a client library swallowed (redis-py can, mid-command).

    Loops that retry on errors call this each round, so disposing always ends them.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class TaskFeeds:
    """Starts, tracks and stops subscription tasks of one broker.

    >>> async def demo():
    ...     feeds = TaskFeeds()
    ...     async def body(emit):
    ...         emit(Event.create(1, id="a"))
    ...     got = []
    ...     obs = feeds.observable(body)
    ...     done = asyncio.Event()
    ...     obs.subscribe(lambda e: got.append(e.id), on_completed=done.set)
    ...     await done.wait()
    ...     return got
    >>> asyncio.run(demo())
    ['a']
    """

    def __init__(self) -> None:
        self._live: dict[asyncio.Task[None], abc.ObserverBase[Event]] = {}
        self.closed = False

    def __len__(self) -> int:
        return len(self._live)

    def observable(self, body: Body) -> Observable[Event]:
        """A cold-to-subscribe, hot-once-running observable driven by ``body(emit)``."""
        return self.each(lambda: (body, _nothing))

    def each(self, begin: Callable[[], tuple[Body, Callable[[], None]]]) -> Observable[Event]:
        """Like :meth:`observable`, but ``begin()`` runs synchronously at each subscribe and
        returns that subscription's body and a ``release`` called once its task is done
        (even when it was disposed before it ever ran): state taken at subscribe time."""

        def on_subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if self.closed:
                observer.on_completed()
                return Disposable()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "networked broker subscriptions need a running asyncio event loop"
                ) from None
            body, release = begin()
            task = loop.create_task(self._run(body, observer))
            self._live[task] = observer

            def done(t: asyncio.Task[None]) -> None:
                self._live.pop(t, None)
                release()

            task.add_done_callback(done)

            def dispose() -> None:
                task.cancel()

            return Disposable(dispose)

        return Observable(on_subscribe)

    async def _run(self, body: Body, observer: abc.ObserverBase[Event]) -> None:
        try:
            await body(observer.on_next)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                observer.on_error(exc)
            return
        observer.on_completed()

    async def close(self) -> None:
        """Cancel every running subscription and complete its observer."""
        self.closed = True
        live = list(self._live.items())
        self._live.clear()
        for task, _ in live:
            task.cancel()
        if live:
            await asyncio.wait([task for task, _ in live], timeout=5.0)
        for _, observer in live:
            with contextlib.suppress(Exception):
                observer.on_completed()

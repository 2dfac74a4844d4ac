"""Where streams come from: iterables, async iterables, NDJSON, intervals.

Every source here works inside an already running asyncio loop (a server, a
Jupyter kernel): nothing calls ``run_until_complete``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.scheduler import CurrentThreadScheduler
from reactivex.scheduler.eventloop import AsyncIOScheduler

from .errors import InvalidInput
from .event import Event, EventError

__all__ = [
    "NdjsonError",
    "from_async_iterable",
    "from_iterable",
    "from_ndjson",
    "interval",
    "parse_ndjson_lines",
]

T = TypeVar("T")


class NdjsonError(InvalidInput):
    """A bad NDJSON line; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()


def from_iterable(items: Iterable[T]) -> Observable[T]:
    """Emit each item on subscribe, then complete. Cold; stops promptly on dispose.

    One tight loop with no scheduler hop per item (unlike ``reactivex.from_iterable``),
    started on the subscribe-time scheduler (the current-thread trampoline by default)
    so that downstream disposal, such as ``take(n)``, is wired up before the first item.

    >>> from_iterable([1, 2, 3]).subscribe(print)  # doctest: +ELLIPSIS
    1
    2
    3
    <...>
    """

    def on_subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        stopped = False

        def run(_: abc.SchedulerBase, __: Any = None) -> None:
            on_next = observer.on_next
            if stopped:
                return
            try:
                for item in items:
                    on_next(item)
                    if stopped:  # before pulling again: a shared iterator keeps the rest
                        return
            except Exception as exc:
                observer.on_error(exc)
            else:
                observer.on_completed()

        def stop() -> None:
            nonlocal stopped
            stopped = True

        sched = scheduler or CurrentThreadScheduler.singleton()
        return CompositeDisposable(sched.schedule(run), Disposable(stop))

    return Observable(on_subscribe)


def from_async_iterable(items: AsyncIterable[T]) -> Observable[T]:
    """Emit what an async iterable yields, on the running loop; dispose cancels it.

    Disposal stops the pulling at once, even while the iterable has items ready (an
    ``asyncio.Queue`` being drained never suspends the task): nothing is taken from it
    that is not delivered.
    """

    def on_subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        stopped = False

        async def pump() -> None:
            try:
                async for item in items:
                    observer.on_next(item)
                    if stopped:
                        return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                observer.on_error(exc)
            else:
                observer.on_completed()

        task = asyncio.get_running_loop().create_task(pump())

        def stop() -> None:
            nonlocal stopped
            stopped = True
            _cancel(task)

        return Disposable(stop)

    return Observable(on_subscribe)


def parse_ndjson_lines(
    lines: Iterable[bytes | str], events: bool = False, first_line: int = 1
) -> Iterator[Any]:
    """Decode NDJSON lines (blank lines skipped); raises :class:`NdjsonError` naming the line.

    With ``events=True`` each line must be a CloudEvent and yields an :class:`Event`.
    """
    for n, line in enumerate(lines, first_line):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise NdjsonError(n, f"malformed JSON: {exc}") from None
        if events:
            try:
                value = Event.from_dict(value)
            except EventError as exc:
                raise NdjsonError(n, str(exc)) from None
        yield value


def from_ndjson(
    source: str | Path | bytes | IO[bytes] | AsyncIterable[bytes], events: bool = False
) -> Observable[Any]:
    """Values (or :class:`Event` objects with ``events=True``) from NDJSON.

    ``source`` is a file path, the bytes themselves, a binary file object, or an
    async byte stream (for example ``aiohttp``'s ``response.content``). A bad line
    ends the stream with :class:`NdjsonError` naming its line number.
    """
    if isinstance(source, bytes):
        return from_iterable(parse_ndjson_lines(source.splitlines(), events))
    if isinstance(source, str | Path):
        path = Path(source)

        def read_file() -> Iterator[Any]:
            with path.open("rb") as f:
                yield from parse_ndjson_lines(f, events)

        return from_iterable(_lazy(read_file))
    if isinstance(source, AsyncIterable):
        return from_async_iterable(_async_ndjson(source, events))
    return from_iterable(_lazy(lambda: parse_ndjson_lines(source, events)))


class _lazy(Iterable[T]):
    """An iterable whose iterator is made afresh on each subscription."""

    def __init__(self, make: Callable[[], Iterator[T]]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[T]:
        return self._make()


async def _async_ndjson(chunks: AsyncIterable[bytes], events: bool) -> Any:
    pending = b""
    line_no = 1
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for value in parse_ndjson_lines(lines, events, first_line=line_no):
            yield value
        line_no += len(lines)
    if pending.strip():
        for value in parse_ndjson_lines([pending], events, first_line=line_no):
            yield value


def interval(seconds: float) -> Observable[int]:
    """0, 1, 2, ... every ``seconds`` on the running asyncio loop (one timer)."""

    def on_subscribe(
        observer: abc.ObserverBase[int], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        sched = scheduler or AsyncIOScheduler(asyncio.get_running_loop())
        return reactivex.interval(seconds, scheduler=sched).subscribe(observer)

    return Observable(on_subscribe)

"""Seeded synthetic event generators: reproducible chat traffic and sensor readings."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from .event import Event
from .sources import _cancel, from_iterable

__all__ = ["chat_messages", "sensor_readings", "synthetic"]

_USERS = ("ada", "grace", "alan", "linus", "barbara", "ken", "margaret", "dennis")
_ROOMS = ("lobby", "random", "dev", "ops")
_WORDS = (
    *("stream", "event", "push", "pull", "batch", "window", "route", "filter", "merge"),
    *("latency", "ship", "deploy", "coffee", "lunch", "review", "rebase", "flaky", "green"),
    *("red", "queue", "broker", "replay"),
)


def chat_messages(seed: int = 0, rooms: tuple[str, ...] = _ROOMS) -> Iterator[Event]:
    """An endless, reproducible stream of chat messages on ``chat.<room>.msg``.

    >>> [e.subject for e in __import__("itertools").islice(chat_messages(1), 2)]
    ['chat.random.msg', 'chat.ops.msg']
    """
    rnd = random.Random(seed)
    n = 0
    while True:
        n += 1
        room = rnd.choice(rooms)
        text = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(1, 8)))
        yield Event.create(
            {"room": room, "user": rnd.choice(_USERS), "text": text, "n": n},
            subject=f"chat.{room}.msg",
            type="chat.message",
            source="rxstreams/synthetic",
        )


def sensor_readings(seed: int = 0, sensors: int = 4) -> Iterator[Event]:
    """An endless, reproducible random walk per sensor on ``sensors.<id>.reading``."""
    rnd = random.Random(seed)
    values = [20.0 + rnd.random() * 5 for _ in range(sensors)]
    while True:
        i = rnd.randrange(sensors)
        values[i] = round(values[i] + rnd.gauss(0, 0.3), 3)
        yield Event.create(
            {"sensor": f"s{i}", "value": values[i]},
            subject=f"sensors.s{i}.reading",
            type="sensor.reading",
            source="rxstreams/synthetic",
        )


def synthetic(
    kind: str = "chat", seed: int = 0, count: int | None = None, rate: float | None = None
) -> Observable[Event]:
    """A synthetic stream (``"chat"`` or ``"sensors"``): ``count`` events, or endless.

    Without ``rate`` it emits synchronously (for tests and benchmarks); with ``rate``
    (events per second) it paces itself on the running asyncio loop.
    """
    makers: dict[str, Callable[[int], Iterator[Event]]] = {
        "chat": chat_messages,
        "sensors": sensor_readings,
    }
    make = makers.get(kind)
    if make is None:
        raise ValueError(f"unknown synthetic kind {kind!r}; use 'chat' or 'sensors'")

    def events() -> Iterator[Event]:
        it = make(seed)
        return it if count is None else (next(it) for _ in range(count))

    if rate is None:
        if count is None:
            raise ValueError("an endless synthetic stream needs a rate")
        return from_iterable(list(events()))
    if rate <= 0:
        raise ValueError("rate must be positive")
    period = 1.0 / rate

    def on_subscribe(
        observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        async def pace() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i, event in enumerate(events()):
                delay = start + i * period - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                observer.on_next(event)
            observer.on_completed()

        task = asyncio.get_running_loop().create_task(pace())
        return Disposable(lambda: _cancel(task))

    return Observable(on_subscribe)

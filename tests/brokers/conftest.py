"""Broker fixtures: one parametrized ``make_broker`` runs every contract test against the
memory, NATS and Redis brokers, each on a fresh uniquely named stream, cleaned up after."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from adapters.brokers import NatsBroker, RedisBroker
from streams import Event, MemoryBroker, Retention

from .services import require

KINDS = ["memory", "nats", "redis"]
UNBOUNDED = Retention(max_events=None, max_bytes=None, max_age=None, max_per_subject=None)


def unique_stream() -> str:
    return f"rxtest-{uuid.uuid4().hex[:12]}"


def build(kind: str, retention: Retention = UNBOUNDED, **kw: Any) -> Any:
    if kind == "memory":
        return MemoryBroker(retention)
    url = require(kind)
    cls = NatsBroker if kind == "nats" else RedisBroker
    return cls(
        kw.pop("url", url), stream=kw.pop("stream", unique_stream()), retention=retention, **kw
    )


async def dispose(broker: Any) -> None:
    if not isinstance(broker, MemoryBroker):
        try:
            await asyncio.wait_for(broker.drop(), 5)
        finally:
            await broker.close()
    else:
        await broker.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param != "memory":
        require(request.param)
    return str(request.param)


@pytest.fixture
async def make_broker(kind: str) -> AsyncIterator[Callable[..., Any]]:
    made: list[Any] = []

    def factory(retention: Retention = UNBOUNDED, **kw: Any) -> Any:
        broker = build(kind, retention, **kw)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        await dispose(broker)


@pytest.fixture
async def broker(make_broker: Callable[..., Any]) -> Any:
    return make_broker()


class Collector:
    """Subscribes and lets a test await a number of events or the terminal error."""

    def __init__(self, observable: Any) -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.completed = False
        self._changed = asyncio.Event()
        self.disposable = observable.subscribe(self._next, self._error, self._done)

    def _next(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def _error(self, exc: BaseException) -> None:
        self.error = exc
        self._changed.set()

    def _done(self) -> None:
        self.completed = True
        self._changed.set()

    async def until(self, predicate: Callable[[Collector], bool], guard: float = 20) -> None:
        """Wait until ``predicate`` holds (the guard only turns a hang into a failure)."""

        async def wait() -> None:
            while not predicate(self):
                if self.error is not None and not predicate(self):
                    raise AssertionError(f"subscription failed: {self.error!r}")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), guard)

    async def count(self, n: int) -> list[Event]:
        await self.until(lambda c: len(c.events) >= n)
        return self.events

    async def failure(self) -> BaseException:
        await self.until(lambda c: c.error is not None or c.completed)
        assert self.error is not None, "expected the subscription to fail"
        return self.error


async def object_names(store: Any) -> list[str]:
    """The names of the live objects in a NATS state store's object store (big checkpoints)."""
    objects = await store._object_store(create=False)
    if objects is None:
        return []
    try:
        return sorted(i.name for i in await objects.list(ignore_deletes=True))
    except Exception:  # nats-py raises NotFoundError for an empty store
        return []


async def close_stores(*stores: Any) -> None:
    """Close state stores made with partition logs of their own, and those logs."""
    for store in stores:
        await store.close()
        await store.parts.close()


@pytest.fixture
async def raw(broker: Any) -> AsyncIterator[Any]:
    """A plain redis-py client on the test Redis (after ``broker``, so its stream exists)."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(require("redis"))
    yield r
    await r.aclose()

"""Helpers for the live tests: a real server that can restart on the same port, and a
collector that awaits what a subscription emits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from adapters.server import ServerConfig, create_app
from streams import Event, MemoryBroker


class LiveServer:
    def __init__(self, broker: MemoryBroker, config: ServerConfig | None = None) -> None:
        self.broker = broker
        self.config = config
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.restarts = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> None:
        runner = web.AppRunner(create_app(self.broker, config=self.config), shutdown_timeout=2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.port = runner.addresses[0][1]
        self.runner = runner

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def restart(self) -> None:
        await self.stop()
        self.restarts += 1
        await self.start()


class Collector:
    """Gathers what a subscription emits; ``wait_for`` parks until a condition holds."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.errors: list[Exception] = []
        self._changed = asyncio.Event()

    def on_next(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def on_error(self, exc: Exception) -> None:
        self.errors.append(exc)
        self._changed.set()

    @property
    def data(self) -> list[object]:
        return [e.data for e in self.events]

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 15.0) -> None:
        """Until ``cond()`` or an error; the timeout only keeps a broken test from hanging."""

        async def loop() -> None:
            while not cond() and not self.errors:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)


async def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``cond`` on the loop (for server-side state with no event to await)."""

    async def loop() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout)

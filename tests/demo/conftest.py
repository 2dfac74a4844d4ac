"""Browser fixtures: the demo served on a free port in a thread, headless Debian Chromium.

Chromium comes from Debian (``scripts/ensure-chromium``), never from ``playwright
install``. Without /usr/bin/chromium the browser tests skip, unless ``CI`` is set: then
they fail, so CI cannot pass without running them.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from adapters.demo import Rules, create_demo_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
T = TypeVar("T")


class DemoServer:
    """The demo app on 127.0.0.1:<free port>, its loop running in a background thread."""

    def __init__(self, rules: Rules) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = create_demo_app(rules=rules)
        self.runner = web.AppRunner(self.app)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.call(self._start())
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def run(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the server's loop (where the broker lives)."""

        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())

    def close(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    # a tight flood limit and a 2 s stats window keep the tests short
    srv = DemoServer(Rules(max_length=200, rate=5.0, burst=5, stats_window=2.0, stats_step=1.0))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing: run scripts/ensure-chromium")
        pytest.skip(f"{CHROMIUM} not found (run scripts/ensure-chromium); browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1360, "height": 820})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()

"""Fixtures: a real server on 127.0.0.1 (AppRunner + TCPSite on port 0) and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.server import ServerConfig, create_app
from streams import MemoryBroker


class Server:
    def __init__(self, runner: web.AppRunner, url: str, broker: MemoryBroker) -> None:
        self.runner = runner
        self.url = url
        self.broker = broker
        self.app = runner.app

    def ws_url(self, path: str = "/ws") -> str:
        return self.url.replace("http://", "ws://") + path


async def start(app: web.Application, broker: Any) -> Server:
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return Server(runner, f"http://{host}:{port}", broker)


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Any]]:
    servers: list[Server] = []

    async def make(broker: MemoryBroker | None = None, **config: Any) -> Server:
        broker = broker if broker is not None else MemoryBroker()
        app = create_app(broker, config=ServerConfig(**config))
        server = await start(app, broker)
        servers.append(server)
        return server

    yield make
    for s in servers:
        await s.runner.cleanup()


@pytest.fixture
async def server(make_server: Callable[..., Any]) -> Server:
    return await make_server()  # type: ignore[no-any-return]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s

"""Client sources with a token provider against a real server whose tokens expire (issue 11,
item 6): the server ends the stream at ``exp``, the source asks the provider again and
resumes, nothing missing and nothing repeated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from adapters.client import Backoff, ServerError, ndjson_source, sse_source, websocket_source
from adapters.server import AuthConfig, ServerConfig
from streams import MemoryBroker

from .live import Collector, LiveServer

KEY = "test-secret-key-of-at-least-32-bytes!"


def short_token(seconds: float = 1.5) -> str:
    claims = {"sub": "ada", "subscribe": [">"], "exp": int(time.time() + seconds)}
    return jwt.encode(claims, KEY, algorithm="HS256")


@pytest.fixture
async def auth_server() -> AsyncIterator[LiveServer]:
    srv = LiveServer(MemoryBroker(), ServerConfig(auth=AuthConfig(key=KEY)))
    await srv.start()
    yield srv
    await srv.stop()


def source(kind: str, srv: LiveServer, **kw: Any) -> Any:
    if kind == "ws":
        return websocket_source(srv.ws, "t.>", f"{srv.broker.epoch}-0", **kw)
    make = sse_source if kind == "sse" else ndjson_source
    return make(f"{srv.http}/events/t.>", f"{srv.broker.epoch}-0", **kw)


@pytest.mark.parametrize("kind", ["sse", "ndjson", "ws"])
@pytest.mark.parametrize("provider_kind", ["sync", "async"])
async def test_a_token_provider_is_asked_again_after_the_server_ends_an_expired_stream(
    auth_server: LiveServer, kind: str, provider_kind: str
) -> None:
    calls: list[float] = []

    def sync_provider() -> str:
        calls.append(time.monotonic())
        return short_token()

    async def async_provider() -> str:
        return sync_provider()

    provider = sync_provider if provider_kind == "sync" else async_provider
    got = Collector()
    backoff = Backoff(initial=0.05, maximum=0.1)
    d = source(kind, auth_server, token=provider, backoff=backoff).subscribe(
        got.on_next, got.on_error
    )
    try:
        n = 0
        deadline = time.monotonic() + 4.5  # two expiries at least
        while time.monotonic() < deadline:
            auth_server.broker.publish("t.x", {"n": n})
            n += 1
            await got.wait_for(lambda n=n: len(got.events) >= n, timeout=10)
            await asyncio.sleep(0.1)
    finally:
        d.dispose()
    assert got.errors == []
    assert got.data == [{"n": i} for i in range(n)]  # nothing missing, nothing repeated
    assert len(calls) >= 3  # the first connection and a reconnect after each expiry


async def test_a_provider_that_returns_an_expired_token_ends_the_stream_with_401(
    auth_server: LiveServer,
) -> None:
    got = Collector()
    d = sse_source(f"{auth_server.http}/events/t.>", token=lambda: short_token(-10)).subscribe(
        got.on_next, got.on_error
    )
    try:
        await got.wait_for(lambda: bool(got.errors), timeout=10)
    finally:
        d.dispose()
    (err,) = got.errors
    assert isinstance(err, ServerError) and err.status == 401

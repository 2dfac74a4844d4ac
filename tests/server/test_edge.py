"""The aiohttp hooks :mod:`adapters.server.serving` overrides have no public API; these tests
fail loudly when an aiohttp release changes them (aiohttp is pinned below 4)."""

from __future__ import annotations

import asyncio
import inspect

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from adapters.server import create_app
from adapters.server.serving import EdgeRunner, _EdgeProtocol, _EdgeServer


def test_the_private_hooks_still_exist() -> None:
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    params = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    params = list(inspect.signature(web.Server.__init__).parameters)
    assert params[:5] == ["self", "handler", "request_factory", "handler_cancellation", "loop"]


async def test_edge_runner_makes_edge_connections() -> None:
    async def handler(_: web.BaseRequest) -> web.Response:
        return web.Response()

    server = web.Server(handler, keepalive_timeout=7)
    assert server._kwargs == {"keepalive_timeout": 7}
    runner = EdgeRunner(create_app(), shutdown_timeout=1)
    await runner.setup()
    try:
        assert isinstance(runner.server, _EdgeServer)
        protocol = runner.server()
        assert isinstance(protocol, _EdgeProtocol)
        assert protocol.keepalive_timeout == 10.0  # ServerConfig.header_timeout
    finally:
        await runner.cleanup()
    await asyncio.sleep(0)


async def test_openapi_document_is_served_with_prefix_limits_and_security() -> None:
    import aiohttp

    from adapters.server import AuthConfig, ServerConfig
    from streams import MemoryBroker

    root = web.Application()
    cfg = ServerConfig(auth=AuthConfig(key="k" * 32), poll_max_timeout=7)
    root.add_subapp("/live", create_app(MemoryBroker(), config=cfg))
    runner = EdgeRunner(root, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://{host}:{port}/live/openapi.json") as r:
                doc = await r.json()
            async with s.get(f"http://{host}:{port}/live/nowhere") as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    finally:
        await runner.cleanup()
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"][0]["url"] == f"http://{host}:{port}/live"
    poll = doc["paths"]["/poll/{pattern}"]["get"]
    timeout = next(p for p in poll["parameters"] if p["name"] == "timeout")
    assert timeout["schema"]["maximum"] == 7
    assert poll["security"] and "bearer" in doc["components"]["securitySchemes"]
    assert set(doc["paths"]["/events/{pattern}"]) == {"get", "post"}

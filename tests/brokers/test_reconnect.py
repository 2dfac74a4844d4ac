"""The broker connection is cut mid-stream (through a local TCP proxy, never by restarting
the shared servers): subscribers continue without loss or duplicates; publishes that were
not acknowledged are reported to the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.brokers import PublishError

from .conftest import Collector, build, dispose, unique_stream
from .proxy import Proxy
from .services import require

pytestmark = pytest.mark.broker


@pytest.fixture(params=["nats", "redis"])
def net(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return str(request.param)


def _via(url: str, proxy: Proxy) -> str:
    scheme, rest = url.split("://", 1)
    path = rest.split("/", 1)[1] if "/" in rest else ""
    return f"{scheme}://127.0.0.1:{proxy.port}" + (f"/{path}" if path else "")


async def _proxy_for(url: str) -> Proxy:
    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return await Proxy(host, int(port)).start()


def _options(net: str) -> dict[str, Any]:
    return {"heartbeat": 0.3} if net == "nats" else {"block": 0.5}


async def test_subscriber_survives_connection_cuts(net: str) -> None:
    url = require(net)
    proxy = await _proxy_for(url)
    stream = unique_stream()
    publisher = build(net, stream=stream)  # direct: publishing goes on during the cuts
    subscriber = build(net, stream=stream, url=_via(url, proxy), **_options(net))
    try:
        start = await publisher.apublish("feed.start", 0)
        sub = Collector(subscriber.subscribe("feed.>", since=start))
        sent = []
        for round_ in range(3):
            for i in range(100):
                sent.append((await publisher.apublish("feed.tick", round_ * 100 + i)).__str__())
            await sub.count(len(sent) - 50)  # the subscriber is mid-stream...
            proxy.cut()  # ...when its connection drops
        events = await sub.count(len(sent))
        marker = await publisher.apublish("feed.end", "end")
        await sub.until(lambda c: c.events[-1].sequence == str(marker))
        assert [e.sequence for e in sub.events[:-1]] == sent  # in order, none lost or doubled
        assert [e.data for e in events[:300]] == list(range(300))
        assert proxy.cuts == 3 and sub.error is None
    finally:
        await dispose(subscriber)
        await dispose(publisher)
        await proxy.close()


async def test_unacknowledged_publish_is_reported(net: str) -> None:
    url = require(net)
    proxy = await _proxy_for(url)
    options: dict[str, Any] = {"timeout": 0.3, "publish_attempts": 2} if net == "nats" else {}
    broker = build(net, url=_via(url, proxy), **options)
    try:
        await broker.apublish("a.b", "reaches the broker")
        await proxy.close()  # the broker is gone: nothing listens any more
        with pytest.raises(PublishError, match="not acknowledged"):
            await asyncio.wait_for(broker.apublish("a.b", "lost?"), 30)
    finally:
        await broker.close()
        direct = build(net, stream=broker.stream)
        await dispose(direct)

"""A 503 that says part of a batch was stored is not retried (a retry would duplicate it)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from adapters.client import publish
from adapters.client.protocol import ServerError
from adapters.server import create_app
from streams import MemoryBroker, Position, PublishError


class HalfBroker(MemoryBroker):
    """A real MemoryBroker whose batches fail after storing the first event."""

    calls = 0

    async def apublish_many(self, subject: str, events: Any) -> list[Position]:
        HalfBroker.calls += 1
        first = self.publish(subject, next(iter(events)))
        raise PublishError("lost the broker mid-batch", committed=[first])


async def test_partly_stored_batch_is_reported_not_retried() -> None:
    broker = HalfBroker()
    async with TestServer(create_app(broker), host="127.0.0.1") as server:
        base = str(server.make_url("/"))
        with pytest.raises(ServerError) as info:
            await publish(base, "x.y", events=[{"a": 1}, {"a": 2}])
    assert info.value.status == 503 and info.value.code == "unavailable"
    assert info.value.body["committed"] == [f"{broker.epoch}-1"]
    assert HalfBroker.calls == 1
    assert len(broker) == 1

"""Fixtures: a real rxstreams server on 127.0.0.1 (see :mod:`tests.client.live`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.client import Backoff
from streams import MemoryBroker, Retention

from .live import LiveServer


@pytest.fixture
async def server() -> AsyncIterator[LiveServer]:
    srv = LiveServer(MemoryBroker(Retention(max_per_subject=None)))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
def fast_backoff() -> Backoff:
    """Reconnect quickly so restarts cost milliseconds; seeded for reproducibility."""
    return Backoff(initial=0.02, maximum=0.2, jitter=0.5, seed=4)

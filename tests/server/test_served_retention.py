"""What a served embedded broker keeps by default: counts and bytes are both bounded, so a
long-running server holds its history as encoded bytes (issue 15's soak held ~550 MB for
100,000 retained events when only counts were bounded)."""

from __future__ import annotations

import tracemalloc

from adapters.cli import resolve_broker
from adapters.server import create_app
from adapters.server.app import BROKER
from streams import Event, MemoryBroker, Retention


def test_create_app_and_the_cli_serve_a_byte_bounded_broker() -> None:
    app_broker = create_app()[BROKER]
    cli_broker = resolve_broker(None)
    for broker in (app_broker, cli_broker):
        assert isinstance(broker, MemoryBroker)
        assert broker.retention == Retention.for_server()
        assert broker.retention.max_bytes == 256 * 2**20
        assert broker.retention.max_events == 100_000
    assert MemoryBroker().retention.max_bytes is None  # in-process default: objects, faster


def _retained_bytes(broker: MemoryBroker, n: int) -> float:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):  # each payload is new, as one decoded from a request would be
        data = {"room": f"r{i % 20}", "user": f"u{i % 50}", "text": "x" * 90, "n": i}
        event = Event.create(data)
        broker.publish(f"chat.r{i % 20}.msg", event)
        event.encode()  # as delivery to any client does
        del data, event
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def test_the_served_default_keeps_history_within_twice_its_encoded_size() -> None:
    n = 5_000
    served = MemoryBroker(Retention.for_server())
    per_event = _retained_bytes(served, n)
    encoded = sum(e.size for e in served.history("chat.>")) / n
    assert len(served.history("chat.>")) == n
    assert per_event <= 2 * encoded, (per_event, encoded)
    assert isinstance(served.history("chat.>")[0], Event)

"""Prometheus metrics with one registry per app, so several mounted apps never collide."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    """The server's counters, gauges and latency histogram.

    >>> m = ServerMetrics(lambda: 0, lambda: 0)
    >>> m.events_in.labels("http").inc(2)
    >>> b"rxstreams_events_in_total{transport=\\"http\\"} 2.0" in m.render()
    True
    """

    def __init__(self, queued_events: Callable[[], float], queued_bytes: Callable[[], float]):
        r = self.registry = CollectorRegistry()
        self.connections = Gauge(
            "rxstreams_connections", "Open streaming connections", ["transport"], registry=r
        )
        self.connections_total = Counter(
            "rxstreams_connections_accepted",
            "Streaming connections accepted",
            ["transport"],
            registry=r,
        )
        self.events_in = Counter(
            "rxstreams_events_in",
            "Events published through the server",
            ["transport"],
            registry=r,
        )
        self.events_out = Counter(
            "rxstreams_events_out",
            "Event deliveries written to clients",
            ["transport"],
            registry=r,
        )
        self.dropped = Counter(
            "rxstreams_events_dropped",
            "Events dropped by a client's overflow policy",
            ["policy"],
            registry=r,
        )
        self.unencodable = Counter(
            "rxstreams_events_unencodable",
            "Events skipped because they cannot be encoded as JSON (published in-process)",
            registry=r,
        )
        self.disconnects = Counter(
            "rxstreams_slow_disconnects", "Clients disconnected for being too slow", registry=r
        )
        self.rejected = Counter(
            "rxstreams_errors",
            "Requests and messages answered with an error",
            ["code"],
            registry=r,
        )
        self.latency = Histogram(
            "rxstreams_send_latency_seconds",
            "From an event entering a client's queue to the write carrying it",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        depth = Gauge("rxstreams_queue_depth_events", "Events queued for all clients", registry=r)
        depth.set_function(queued_events)
        depth_b = Gauge("rxstreams_queue_depth_bytes", "Bytes queued for all clients", registry=r)
        depth_b.set_function(queued_bytes)

    def watch_broker(self, broker: object) -> None:
        """Export the broker's count of unreadable log entries it skipped (entries other
        producers wrote that cannot become events; see :mod:`adapters.brokers.foreign`)."""
        skipped = getattr(broker, "skipped", None)
        if skipped is None:
            return
        self.registry.register(_SkippedCollector(skipped))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _SkippedCollector(Collector):
    """``rxstreams_broker_entries_skipped_total``, read from the broker at each scrape."""

    def __init__(self, skipped: Any) -> None:
        self.skipped = skipped

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "rxstreams_broker_entries_skipped",
            "Unreadable broker log entries (written by other producers) that readers skipped",
            value=float(self.skipped.count),
        )

"""Publish-to-subscriber throughput and p99 latency through the memory, NATS and Redis
brokers, measured in the same run (median of rounds). Prints one JSON line.

Each round: one subscriber on ``bench.>`` from the round's start position, one publisher
keeping ``WINDOW`` publishes in flight (a sliding window: ``WINDOW`` coroutines each start
their next publish when their last one is acknowledged); latency is publish call to
subscriber delivery.
Servers: NATS JetStream on 127.0.0.1:4222, Redis on 127.0.0.1:6379 (env RXSTREAMS_NATS_URL,
RXSTREAMS_REDIS_URL); a server that does not answer is reported as unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from adapters.brokers import NatsBroker, RedisBroker
from streams import Event, MemoryBroker, Retention

EVENTS = int(os.environ.get("BENCH_EVENTS", "5000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WINDOW = 64
RETENTION = Retention(max_events=200_000, max_bytes=None, max_per_subject=None)
NATS_URL = os.environ.get("RXSTREAMS_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("RXSTREAMS_REDIS_URL", "redis://127.0.0.1:6379/0")


async def one_round(broker: Any) -> tuple[float, float, float]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    def on_event(event: Event) -> None:
        latencies.append(time.perf_counter() - sent[event.id])
        if len(latencies) == EVENTS:
            done.set()

    start = await broker.apublish("bench.start", None)
    subscription = broker.subscribe("bench.>", since=start).subscribe(on_event)
    events = [Event.create({"n": i, "text": "hello, world"}) for i in range(EVENTS)]
    queue = iter(events)

    async def publisher() -> None:  # one of WINDOW: each keeps one publish in flight
        for event in queue:
            sent[event.id] = time.perf_counter()
            await broker.apublish("bench.tick", event)

    began = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(WINDOW)))
    await asyncio.wait_for(done.wait(), 60)
    elapsed = time.perf_counter() - began
    subscription.dispose()
    latencies.sort()
    p50, p99 = (latencies[int(len(latencies) * q) - 1] * 1000 for q in (0.5, 0.99))
    return EVENTS / elapsed, p50, p99


async def measure(make: Any) -> dict[str, Any]:
    broker = make()
    try:
        rounds = [await one_round(broker) for _ in range(ROUNDS)]
    except Exception as exc:  # a server that is not there
        return {"unavailable": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        if hasattr(broker, "drop"):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broker.drop(), 5)
        await broker.close()
    return {
        "events_per_s": round(statistics.median(r[0] for r in rounds)),
        "p50_ms": round(statistics.median(r[1] for r in rounds), 3),
        "p99_ms": round(statistics.median(r[2] for r in rounds), 3),
    }


async def main() -> None:
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    results = {
        "memory": await measure(lambda: MemoryBroker(RETENTION)),
        "nats": await measure(lambda: NatsBroker(NATS_URL, stream, RETENTION)),
        "redis": await measure(lambda: RedisBroker(REDIS_URL, stream, RETENTION)),
    }
    base = results["memory"].get("events_per_s")
    ratios = {
        f"{name}_vs_memory_throughput": round(r["events_per_s"] / base, 4)
        for name, r in results.items()
        if name != "memory" and base and "events_per_s" in r
    }
    line = {
        "benchmark": "brokers",
        "events": EVENTS,
        "rounds": ROUNDS,
        "window": WINDOW,
        **results,
        "ratios": ratios,
    }
    import orjson

    print(orjson.dumps(line).decode())


if __name__ == "__main__":
    asyncio.run(main())

"""rxstreams' NATS and Redis brokers next to the raw client libraries, in the same run.

Prints one JSON line. Per broker (``nats``, ``redis``) every path is measured twice per
round, once through rxstreams and once through the raw client (nats-py / redis-py) doing
the same thing idiomatically, rx and raw interleaved (rx, raw, rx, raw, ...) so machine
noise hits both; the figure is the median of ``BENCH_ROUNDS`` rounds (default 3) of
``BENCH_EVENTS`` events (default 5000). Events are 200 bytes: rxstreams publishes a
CloudEvent whose encoded JSON is 200 bytes; the raw side publishes the same CloudEvent
fields as a dict it serializes with orjson, so both sides encode one ~200-byte JSON
document per event inside the timed region and both sides parse it once per delivery.

Paths, realistic case first:

- ``publish``: 64 publishes in flight (a sliding window: 64 coroutines, each awaiting its
  own acknowledgement before starting the next). rxstreams ``apublish(subject, event)``;
  raw NATS ``js.publish("<stream>.<subject>", payload, headers={"Nats-Msg-Id": id})``;
  raw Redis ``XADD rxstreams:{S}:log * s <subject> e <payload>``.
- ``publish_many``: batches of 100, one batch at a time. rxstreams ``apublish_many``; raw
  NATS 100 ``js.publish_async`` then awaiting the 100 ack futures; raw Redis 100 XADDs in a
  pipeline (``transaction=False``).
- ``replay``: the ``publish`` path's N stored events read back from the position before
  them: rxstreams ``subscribe(">", since=...)`` until N received; raw NATS an ephemeral
  ordered push consumer (``deliver_policy=by_start_sequence``, flow control, heartbeats, no
  acks: the same guarantees rxstreams' own consumer gives) with a callback that parses each
  payload; raw Redis an ``XREAD COUNT 512`` loop parsing each entry's ``e`` field. Includes
  creating the consumer.
- ``live``: one subscriber from the current end of the log, then 64 concurrent publishers
  (one publish in flight each); events/s as received by the subscriber (first publish to
  N-th delivery). Raw: the same ordered push consumer / an ``XREAD BLOCK`` loop, 64
  ``js.publish`` / ``XADD`` publishers.
- ``latency``: one publisher on a steady schedule of ``BENCH_RATE`` events/s (default
  1,000) for ``BENCH_LATENCY_S`` seconds (default 2), each publish awaited before the next,
  one live subscriber; latency is publish call to subscriber delivery, p50 and p99.

Why the baseline is fair: both sides store the same thing in the same layout (NATS: a
stream with the same limits capturing ``<stream>.>``, subject ``<stream>.<subject>``, the
event id in ``Nats-Msg-Id`` for deduplication; Redis: key ``rxstreams:{S}:log`` with fields
``s`` and ``e``), under a separate stream / key so the two never mix; both serialize and
parse the JSON once per event and both subscribers use the same delivery mechanism. What
the raw side does not do is what rxstreams adds on top (event validation, positions and
epochs, gap detection, retention bookkeeping, reconnection): that overhead is what the
ratios measure. Ratios are rx / raw (throughput: higher is better, target >= 0.8; p99:
lower is better, target <= 1.5); ``targets_met`` says whether all hold.

``end_to_end`` keeps the earlier figures: memory, NATS and Redis brokers publish-to-
subscriber (one subscriber on ``bench.>``, 64 publishes in flight), events/s, p50 and p99
latency, and ``*_vs_memory_throughput``.

Servers: NATS JetStream on 127.0.0.1:4222, Redis on 127.0.0.1:6379 (env
RXSTREAMS_NATS_URL, RXSTREAMS_REDIS_URL); a server that does not answer is reported as
unavailable. Every stream and key measured is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from adapters.brokers import NatsBroker, RedisBroker
from streams import Event, MemoryBroker, Retention

EVENTS = int(os.environ.get("BENCH_EVENTS", "5000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
RATE = float(os.environ.get("BENCH_RATE", "1000"))
LATENCY_S = float(os.environ.get("BENCH_LATENCY_S", "2"))
WINDOW = 64
BATCH = 100
TIMEOUT = 60.0  # any one measurement; past it the broker is reported as failed
SETTLE = 0.2  # pause after each measurement: the last one's tear-down never overlaps the next
SUBJECT = "bench.tick"
RETENTION = Retention(max_events=200_000, max_bytes=None, max_per_subject=None)
NATS_URL = os.environ.get("RXSTREAMS_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("RXSTREAMS_REDIS_URL", "redis://127.0.0.1:6379/0")
TEXT = "hello, world"


# -- what both sides share ------------------------------------------------------------
class Sink:
    """Counts deliveries (by event id) until ``expected``; records latency when the id was
    stamped in ``sent``."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.last = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def hit(self, event_id: str) -> None:
        now = time.perf_counter()
        sent = self.sent.pop(event_id, None)
        if sent is not None:
            self.latencies.append(now - sent)
        self.count += 1
        if self.count == self.expected:
            self.last = now
            if not self.done.done():
                self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    async def wait(self) -> float:
        await asyncio.wait_for(asyncio.shield(self.done), TIMEOUT)
        return self.last


Stop = Callable[[], Awaitable[None]]


class Side:
    """One way of doing each path: rxstreams or the raw client, on one broker."""

    async def setup(self) -> None: ...
    def items(self, n: int) -> list[Any]: ...
    def ident(self, item: Any) -> str: ...
    async def publish(self, item: Any) -> None: ...
    async def publish_many(self, items: list[Any]) -> None: ...
    async def mark(self) -> Any: ...
    async def follow(self, since: Any, sink: Sink) -> Stop: ...
    async def teardown(self) -> None: ...


class Rx(Side):
    """rxstreams' public API only."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    async def setup(self) -> None:
        await self.broker.last_position()  # connects (and creates the stream)

    def items(self, n: int) -> list[Event]:
        events = [Event.create({"n": i, "text": TEXT}) for i in range(n)]
        for event in events:
            _ = event.time  # formatted now, as the raw side formats its timestamp before timing
        return events

    def ident(self, item: Event) -> str:
        return item.id

    async def publish(self, item: Event) -> None:
        await self.broker.apublish(SUBJECT, item)

    async def publish_many(self, items: list[Event]) -> None:
        await self.broker.apublish_many(SUBJECT, items)

    async def mark(self) -> Any:
        return await self.broker.last_position()

    async def follow(self, since: Any, sink: Sink) -> Stop:
        sub = self.broker.subscribe(">", since=since).subscribe(lambda e: sink.hit(e.id), sink.fail)

        async def stop() -> None:
            sub.dispose()

        return stop

    async def teardown(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broker.drop(), 5)
        await self.broker.close()


_DOC_PREFIX = uuid.uuid4().hex[:12]
_doc_ids = iter(range(1, 1 << 62))


def raw_docs(n: int) -> list[dict[str, Any]]:
    """The same CloudEvent fields rxstreams stores, as plain dicts (encoded when sent)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [
        {
            "specversion": "1.0",
            "id": f"{_DOC_PREFIX}-{next(_doc_ids)}",
            "source": "rxstreams",
            "type": "rxstreams.event",
            "time": now,
            "datacontenttype": "application/json",
            "data": {"n": i, "text": TEXT},
        }
        for i in range(n)
    ]


class RawNats(Side):
    """nats-py alone: a stream configured like rxstreams', ``<stream>.<subject>``."""

    def __init__(self, url: str, stream: str) -> None:
        self.url = url
        self.stream = stream
        self.subject = f"{stream}.{SUBJECT}"
        self.nc: Any = None
        self.js: Any = None

    async def setup(self) -> None:
        import nats
        from nats.js.api import DiscardPolicy, RetentionPolicy, StreamConfig

        async def quiet(exc: Exception) -> None:  # a missing server is reported, not logged
            pass

        self.nc = await nats.connect(
            self.url, connect_timeout=2, max_reconnect_attempts=1, error_cb=quiet
        )
        self.js = self.nc.jetstream(timeout=2.0)
        await self.js.add_stream(
            StreamConfig(
                name=self.stream,
                subjects=[f"{self.stream}.>"],
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.OLD,
                max_msgs=RETENTION.max_events or -1,
                duplicate_window=120.0,
            )
        )

    def items(self, n: int) -> list[dict[str, Any]]:
        return raw_docs(n)

    def ident(self, item: dict[str, Any]) -> str:
        return str(item["id"])

    async def publish(self, item: dict[str, Any]) -> None:
        await self.js.publish(self.subject, orjson.dumps(item), headers={"Nats-Msg-Id": item["id"]})

    async def publish_many(self, items: list[dict[str, Any]]) -> None:
        futures = [
            await self.js.publish_async(
                self.subject, orjson.dumps(d), headers={"Nats-Msg-Id": d["id"]}
            )
            for d in items
        ]
        await asyncio.gather(*futures)

    async def mark(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def follow(self, since: int, sink: Sink) -> Stop:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        async def on_message(msg: Any) -> None:
            try:
                sink.hit(orjson.loads(msg.data)["id"])
            except Exception as exc:
                sink.fail(exc)

        sub = await self.js.subscribe(
            f"{self.stream}.>",
            stream=self.stream,
            cb=on_message,
            ordered_consumer=True,
            idle_heartbeat=1.0,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(opt_start_seq=since + 1),
        )

        async def stop() -> None:  # as rxstreams does: unsubscribe, delete the consumer
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.stream, sub._consumer)

        return stop

    async def teardown(self) -> None:
        if self.nc is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.js.delete_stream(self.stream), 5)
        with contextlib.suppress(Exception):
            await self.nc.close()


class RawRedis(Side):
    """redis-py alone: ``XADD rxstreams:{S}:log * s <subject> e <payload>``."""

    def __init__(self, url: str, stream: str) -> None:
        self.url = url
        self.key = f"rxstreams:{{{stream}}}:log"
        self.r: Any = None

    async def setup(self) -> None:
        import redis.asyncio as aioredis

        self.r = aioredis.Redis.from_url(self.url, socket_connect_timeout=2.0)
        await self.r.ping()

    def items(self, n: int) -> list[dict[str, Any]]:
        return raw_docs(n)

    def ident(self, item: dict[str, Any]) -> str:
        return str(item["id"])

    async def publish(self, item: dict[str, Any]) -> None:
        await self.r.xadd(self.key, {"s": SUBJECT, "e": orjson.dumps(item)})

    async def publish_many(self, items: list[dict[str, Any]]) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            for d in items:
                pipe.xadd(self.key, {"s": SUBJECT, "e": orjson.dumps(d)})
            await pipe.execute()

    async def mark(self) -> Any:
        last = await self.r.xrevrange(self.key, count=1)
        return last[0][0] if last else b"0-0"

    async def follow(self, since: Any, sink: Sink) -> Stop:
        async def loop() -> None:
            after = since
            try:
                while True:
                    reply = await self.r.xread({self.key: after}, count=512, block=5000)
                    if not reply:
                        continue
                    entries = reply[0][1]
                    for _, fields in entries:
                        sink.hit(orjson.loads(fields[b"e"])["id"])
                    after = entries[-1][0]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                sink.fail(exc)

        task = asyncio.create_task(loop())

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

        return stop

    async def teardown(self) -> None:
        if self.r is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.r.delete(self.key), 5)
        with contextlib.suppress(Exception):
            await self.r.aclose()


# -- the paths ------------------------------------------------------------------------
async def windowed(side: Side, items: list[Any]) -> float:
    """Publish with ``WINDOW`` in flight; returns the elapsed seconds."""
    queue: Iterator[Any] = iter(items)

    async def publisher() -> None:
        for item in queue:
            await side.publish(item)

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(publisher() for _ in range(WINDOW))), TIMEOUT)
    return time.perf_counter() - began


async def path_publish(side: Side) -> tuple[float, Any]:
    """events/s, and the position before the events (for replay)."""
    items = side.items(EVENTS)
    since = await side.mark()
    return EVENTS / await windowed(side, items), since


async def path_publish_many(side: Side) -> float:
    items = side.items(EVENTS)
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    began = time.perf_counter()
    for batch in batches:
        await asyncio.wait_for(side.publish_many(batch), TIMEOUT)
    return EVENTS / (time.perf_counter() - began)


async def path_replay(side: Side, since: Any) -> float:
    sink = Sink(EVENTS)
    began = time.perf_counter()
    stop = await side.follow(since, sink)
    try:
        last = await sink.wait()
    finally:
        await stop()
    return EVENTS / (last - began)


async def path_live(side: Side) -> float:
    sink = Sink(EVENTS)
    items = side.items(EVENTS)
    stop = await side.follow(await side.mark(), sink)
    try:
        await asyncio.sleep(0.05)  # rxstreams sets its consumer up in the background
        began = time.perf_counter()
        await windowed(side, items)
        last = await sink.wait()
    finally:
        await stop()
    return EVENTS / (last - began)


async def path_latency(side: Side) -> tuple[float, float]:
    n = max(int(RATE * LATENCY_S), 100)
    sink = Sink(n)
    items = side.items(n)
    stop = await side.follow(await side.mark(), sink)
    try:
        await asyncio.sleep(0.05)  # let the subscriber settle into waiting
        began = time.perf_counter()
        for i, item in enumerate(items):
            delay = began + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sink.sent[side.ident(item)] = time.perf_counter()
            await asyncio.wait_for(side.publish(item), TIMEOUT)
        await sink.wait()
    finally:
        await stop()
    return quantile(sink.latencies, 0.5), quantile(sink.latencies, 0.99)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(len(ordered) * q) - 1, 0)] * 1000


async def warm_up(side: Side) -> None:
    await side.setup()
    await windowed(side, side.items(500))
    await side.publish_many(side.items(BATCH))


async def compare(rx: Side, raw: Side) -> dict[str, Any]:
    sides = {"rx": rx, "raw": raw}
    runs: dict[str, dict[str, list[float]]] = {
        path: {"rx": [], "raw": []}
        for path in ("publish", "publish_many", "replay", "live", "p50_ms", "p99_ms")
    }
    for side in sides.values():
        await warm_up(side)
    for _ in range(ROUNDS):  # each path: rx, then raw, then the next path
        marks: dict[str, Any] = {}
        for name, side in sides.items():
            eps, marks[name] = await path_publish(side)
            runs["publish"][name].append(eps)
            await asyncio.sleep(SETTLE)
        for name, side in sides.items():
            runs["publish_many"][name].append(await path_publish_many(side))
            await asyncio.sleep(SETTLE)
        for name, side in sides.items():
            runs["replay"][name].append(await path_replay(side, marks[name]))
            await asyncio.sleep(SETTLE)
        for name, side in sides.items():
            runs["live"][name].append(await path_live(side))
            await asyncio.sleep(SETTLE)
        for name, side in sides.items():
            p50, p99 = await path_latency(side)
            runs["p50_ms"][name].append(p50)
            runs["p99_ms"][name].append(p99)
            await asyncio.sleep(SETTLE)
    out: dict[str, Any] = {}
    for path, by_side in runs.items():
        digits = 3 if path.endswith("_ms") else 0
        out[path] = {
            name: round(statistics.median(values), digits)
            if digits
            else round(statistics.median(values))
            for name, values in by_side.items()
        }
    throughput = ("publish", "publish_many", "replay", "live")
    for path in (*throughput, "p99"):
        key = "p99_ms" if path == "p99" else path
        rx_value, raw_value = out[key]["rx"], out[key]["raw"]
        out[f"{path}_vs_raw"] = round(rx_value / raw_value, 3) if raw_value else None
    out["targets_met"] = (
        all((out[f"{p}_vs_raw"] or 0) >= 0.8 for p in throughput)
        and (out["p99_vs_raw"] or 99) <= 1.5
    )
    return out


async def versus_raw(make_rx: Callable[[], Any], raw: Side) -> dict[str, Any]:
    rx = Rx(make_rx())
    try:
        try:
            await asyncio.wait_for(raw.setup(), 5)
        except Exception as exc:  # a server that is not there
            return {"unavailable": f"{type(exc).__name__}: {exc}"[:200]}
        try:
            return await compare(rx, raw)
        except Exception as exc:
            return {"failed": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        await rx.teardown()
        await raw.teardown()


# -- end to end: memory vs NATS vs Redis through rxstreams ---------------------------
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
    events = [Event.create({"n": i, "text": TEXT}) for i in range(EVENTS)]
    queue = iter(events)

    async def publisher() -> None:  # one of WINDOW: each keeps one publish in flight
        for event in queue:
            sent[event.id] = time.perf_counter()
            await broker.apublish("bench.tick", event)

    began = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(WINDOW)))
    await asyncio.wait_for(done.wait(), TIMEOUT)
    elapsed = time.perf_counter() - began
    subscription.dispose()
    return EVENTS / elapsed, quantile(latencies, 0.5), quantile(latencies, 0.99)


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


async def end_to_end(stream: str) -> dict[str, Any]:
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
    return {**results, "ratios": ratios}


async def main() -> None:
    began = time.perf_counter()
    tag = uuid.uuid4().hex[:8]
    nats_result = await versus_raw(
        lambda: NatsBroker(NATS_URL, f"bench-{tag}", RETENTION),
        RawNats(NATS_URL, f"bench-{tag}-raw"),
    )
    redis_result = await versus_raw(
        lambda: RedisBroker(REDIS_URL, f"bench-{tag}", RETENTION),
        RawRedis(REDIS_URL, f"bench-{tag}-raw"),
    )
    line = {
        "benchmark": "brokers",
        "events": EVENTS,
        "rounds": ROUNDS,
        "window": WINDOW,
        "batch": BATCH,
        "latency_rate": RATE,
        "nats": nats_result,
        "redis": redis_result,
        "end_to_end": await end_to_end(f"bench-e2e-{tag}"),
    }
    line["seconds"] = round(time.perf_counter() - began, 1)
    print(orjson.dumps(line).decode())


if __name__ == "__main__":
    asyncio.run(main())

"""The keyed pipeline the stateful-worker tests and benchmark run (imported by worker
processes as ``tests.integration.stateful_pipelines:pipeline``), its input and its oracle.

Chat-like events ``{room, user, msg, ts}``, through the library's operators as a user
would write them: ``dedupe`` by message id (5% are sent twice), one group per (room, user)
(``group_by_key``) whose ``rate_limit`` lets 5 messages through at once and then one per
5 s of event time, then a count per room in 10 s event-time windows (``tumbling``) with 5 s
of allowed lateness, each room on its own watermark (3% of events are stragglers up to 20 s
late, so some are reported late). Keyed by room: every piece of state is per room, so the
answers do not depend on how rooms are spread over partitions.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any

import orjson
from reactivex import Observable, Subject
from reactivex import operators as ops

from operators import Group, Late, Window, count_of, dedupe, group_by_key, rate_limit, tumbling
from streams import Event

DAY = 86_400.0  # dedupe's memory: longer than any run, so it never forgets a message id


def ts_of(d: dict[str, Any]) -> float:
    return float(d["ts"])


def room_of(d: dict[str, Any]) -> str:
    return str(d["room"])


def sender_of(d: dict[str, Any]) -> tuple[str, str]:
    return d["room"], d["user"]


def per_sender(group: Group[tuple[str, str], dict[str, Any]]) -> Observable[dict[str, Any]]:
    return group.pipe(rate_limit(0.2, burst=5, timestamp=ts_of))


def record(out: Window | Late[dict[str, Any]]) -> dict[str, Any]:
    """A window's count, or a late event's time, as the JSON a worker publishes."""
    if isinstance(out, Late):
        return {"key": out.event["room"], "late": out.event["ts"]}
    start = int(out.start) if out.start.is_integer() else out.start
    return {"key": out.key, "start": start, "count": out.value}


def pipeline(events: Observable[Event]) -> Observable[Any]:
    delay = float(os.environ.get("RX_DELAY", "0"))

    def data(e: Event) -> Any:
        if delay:
            time.sleep(delay)  # simulated work, so a kill lands mid-stream
        return e.data

    return events.pipe(
        ops.map(data),
        dedupe(lambda d: d["msg"], ttl=DAY, name="dedupe"),
        group_by_key(sender_of, name="senders"),
        ops.flat_map(per_sender),
        tumbling(
            10,
            key=room_of,
            timestamp=ts_of,
            lateness=5,
            agg=count_of(),
            watermark="per_key",
            name="windows",
        ),
        ops.map(record),
    )


def make_inputs(n: int, rooms: int = 24, users: int = 4, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` input records (duplicates included), in publishing order."""
    rnd = random.Random(seed)
    t = 1000.0
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < n:
        t += rnd.random() * 0.1
        ts = t - rnd.random() * 20 if rnd.random() < 0.03 else t
        d = {"room": f"r{rnd.randrange(rooms)}", "user": f"u{rnd.randrange(users)}",
             "msg": f"m{i}", "ts": round(ts, 3)}  # fmt: skip
        out.append(d)
        if rnd.random() < 0.05 and len(out) < n:
            out.append(dict(d))
        i += 1
    return out


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def oracle(inputs: list[dict[str, Any]]) -> Counter[bytes]:
    """The outputs of one subscription running the pipeline over every input, in order."""
    got: list[Any] = []
    source: Subject[Event] = Subject()
    pipeline(source).subscribe(got.append)
    for d in inputs:  # never completed: a worker's pipeline never is (no final flush)
        source.on_next(Event.create(d, subject="in.msg"))
    return Counter(canonical(v) for v in got)


def tagged(events: Observable[Event]) -> Observable[Any]:
    """:func:`pipeline`, each output tagged with the process that produced it and the
    wall-clock time this pipeline was built (a partition's owner builds it when it claims
    the partition): the zombie test tells a stale owner's outputs by them."""
    tag = {"pid": os.getpid(), "built": time.time()}
    return pipeline(events).pipe(ops.map(lambda v: {**v, **tag}))

"""The keyed pipeline the stateful-worker tests and benchmark run (imported by worker
processes as ``tests.integration.stateful_pipelines:pipeline``), its input and its oracle.

Chat-like events ``{room, user, msg, ts}``: ``dedupe`` by message id (5% are sent twice),
at most 5 messages per (room, user) per 10 s of event time, then a count per room in
10 s event-time windows with 5 s of allowed lateness (3% of events are stragglers up to 20 s
late, so some are reported late). Keyed by room: every piece of state is per room.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any

import orjson
import reactivex
from reactivex import Observable
from reactivex import operators as ops

from adapters.brokers.stages import dedupe_by, rate_limit_by, tumbling_count
from streams import Event


def pipeline(events: Observable[Event]) -> Observable[Any]:
    delay = float(os.environ.get("RX_DELAY", "0"))

    def data(e: Event) -> Any:
        if delay:
            time.sleep(delay)  # simulated work, so a kill lands mid-stream
        return e.data

    return events.pipe(
        ops.map(data),
        dedupe_by(lambda d: d["msg"], name="dedupe"),
        rate_limit_by(lambda d: (d["room"], d["user"]), lambda d: d["ts"], 5, 10, name="limit"),
        tumbling_count(lambda d: d["room"], lambda d: d["ts"], 10, 5, name="windows"),
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
    source = reactivex.from_iterable([Event.create(d, subject="in.msg") for d in inputs])
    pipeline(source).subscribe(got.append)
    return Counter(canonical(v) for v in got)


def tagged(events: Observable[Event]) -> Observable[Any]:
    """:func:`pipeline`, each output tagged with the process that produced it and the
    wall-clock time this pipeline was built (a partition's owner builds it when it claims
    the partition): the zombie test tells a stale owner's outputs by them."""
    tag = {"pid": os.getpid(), "built": time.time()}
    return pipeline(events).pipe(ops.map(lambda v: {**v, **tag}))

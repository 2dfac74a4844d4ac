"""What an Event costs: create, encode (once, then cached), decode; against baselines.

``restore_retained_ns`` is what a byte-bounded MemoryBroker pays per event it replays
(rebuilding a retained event from its bytes, without re-validating them).

Baselines measured in the same run: a frozen ``dataclass(slots=True)`` with the same
fields (what one would write by hand) and the orjson round trip of a plain dict.
Prints one JSON line; medians of --runs runs of --events events.

    python benchmarks/event.py [--events 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from streams import Event


@dataclass(frozen=True, slots=True)
class PlainEvent:
    id: str
    source: str
    type: str
    subject: str | None
    time: str
    datacontenttype: str
    data: Any


def ns_per(fn: Callable[[int], None], n: int, runs: int) -> float:
    samples = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn(n)
        samples.append((time.perf_counter() - t0) / n * 1e9)
    return statistics.median(samples)


DATA = {"user": "ada", "text": "hello"}
NOW = "2026-11-26T07:00:00.000000Z"
RAW = Event.create(DATA, subject="chat.lobby.msg").encode()
AS_DICT = orjson.loads(RAW)
STORED = Event.create(DATA).stamped("chat.lobby.msg", ("e", 1)).encode()


def ours(k: int) -> None:
    create = Event.create
    for _ in range(k):
        create(DATA, subject="chat.lobby.msg", type="chat.message")


def plain(k: int) -> None:
    for i in range(k):
        PlainEvent(str(i), "rxstreams", "chat.message", "chat.lobby.msg", NOW, "json", DATA)


def encoder(events: list[Event]) -> Callable[[int], None]:
    """Encode the first ``k`` events: the first call encodes, later ones hit the cache."""

    def encode(k: int) -> None:
        for e in events[:k]:
            e.encode()

    return encode


def dict_dumps(k: int) -> None:
    dumps = orjson.dumps
    for _ in range(k):
        dumps(AS_DICT)


def decode(k: int) -> None:
    for _ in range(k):
        Event.decode(RAW)


def restore(k: int) -> None:
    """What a byte-bounded MemoryBroker pays to rebuild a retained event for replay."""
    for _ in range(k):
        Event._restore(STORED, "chat.lobby.msg", ("e", 1))


def dict_loads(k: int) -> None:
    loads = orjson.loads
    for _ in range(k):
        loads(RAW)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    n, r = a.events, a.runs
    encode = encoder([Event.create(DATA, subject="chat.lobby.msg") for _ in range(n)])
    create_ns, plain_ns = ns_per(ours, n, r), ns_per(plain, n, r)
    encode_ns = ns_per(encode, n, 1)  # first encode of each event (then cached)
    cached_ns, dumps_ns = ns_per(encode, n, r), ns_per(dict_dumps, n, r)
    decode_ns, loads_ns = ns_per(decode, n, r), ns_per(dict_loads, n, r)
    restore_ns = ns_per(restore, n, r)
    print(
        orjson.dumps(
            {
                "benchmark": "event",
                "events": n,
                "create_ns": round(create_ns),
                "frozen_dataclass_ns": round(plain_ns),
                "create_vs_dataclass": round(create_ns / plain_ns, 2),
                "first_encode_ns": round(encode_ns),
                "cached_encode_ns": round(cached_ns),
                "orjson_dumps_dict_ns": round(dumps_ns),
                "decode_validate_ns": round(decode_ns),
                "restore_retained_ns": round(restore_ns),
                "orjson_loads_ns": round(loads_ns),
            }
        ).decode()
    )


if __name__ == "__main__":
    main()

"""MemoryBroker throughput against a reactivex Subject, measured in the same run.

Prints one JSON line. Both sides deliver the same pre-built events to subscribers that
count them; the broker also assigns positions, keeps history and (by default) accounts
bytes, i.e. encodes each event once. Median of --runs runs.

It also reports what history costs in memory: the bytes a MemoryBroker holds per
retained event (traced allocations after publishing ``--retained`` fresh events of about
260 encoded bytes, the event objects included), against the event's encoded size. With
a count bound only, the broker keeps the event objects: measured before and after the
events were encoded (a server encodes each event once for its clients and the event
keeps the bytes). With a byte bound (``byte_bounded_*``), the broker keeps only the
encoded bytes, whatever happens to the event objects afterwards.

    python benchmarks/broker.py [--events 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable

import orjson
from reactivex import operators as ops
from reactivex.subject import Subject

from streams import Event, MemoryBroker, Retention, match


def timed(fn: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def counter() -> tuple[list[int], Callable[[object], None]]:
    """A subscriber that counts, the same for every side of the comparison."""
    seen = [0]

    def count(_: object) -> None:
        seen[0] += 1

    return seen, count


def one_subscriber(events: list[Event], retention: Retention) -> tuple[float, float]:
    def memory() -> int:
        b = MemoryBroker(retention)
        seen, count = counter()
        b.subscribe("chat.>").subscribe(count)
        publish = b.publish
        for e in events:
            publish("chat.lobby.msg", e)
        assert seen[0] == len(events)
        return len(events)

    def subject() -> int:
        s: Subject[Event] = Subject()
        seen, count = counter()
        s.subscribe(count)
        on_next = s.on_next
        for e in events:
            on_next(e)
        assert seen[0] == len(events)
        return len(events)

    return timed(memory), timed(subject)


def batched(events: list[Event], retention: Retention, size: int = 100) -> float:
    def memory() -> int:
        b = MemoryBroker(retention)
        seen, count = counter()
        b.subscribe("chat.>").subscribe(count)
        publish_many = b.publish_many
        for i in range(0, len(events), size):
            publish_many("chat.lobby.msg", events[i : i + size])
        assert seen[0] == len(events)
        return len(events)

    return timed(memory)


def hundred_patterns(events: list[Event], retention: Retention) -> tuple[float, float]:
    subjects = [f"room{i}.msg" for i in range(100)]

    def memory() -> int:
        b = MemoryBroker(retention)
        seen, count = counter()
        for i in range(100):
            b.subscribe(f"room{i}.*").subscribe(count)
        publish = b.publish
        for i, e in enumerate(events):
            publish(subjects[i % 100], e)
        assert seen[0] == len(events)
        return len(events)

    def subject() -> int:
        s: Subject[tuple[str, Event]] = Subject()
        seen, count = counter()

        def matches(pattern: str) -> Callable[[tuple[str, Event]], bool]:
            return lambda m: match(pattern, m[0])

        for i in range(100):
            s.pipe(ops.filter(matches(f"room{i}.*"))).subscribe(count)
        on_next = s.on_next
        for i, e in enumerate(events):
            on_next((subjects[i % 100], e))
        assert seen[0] == len(events)
        return len(events)

    return timed(memory), timed(subject)


def chat_event(i: int) -> Event:
    """A fresh chat event of about 260 encoded bytes once stamped by a broker."""
    return Event.create({"user": f"u{i % 200}", "text": f"message {i}"}, type="chat.msg")


def held_per_event(n: int, retention: Retention) -> tuple[float, float, float]:
    """Traced bytes a broker holds per retained event after ``n`` publishes, before and
    after each retained event was encoded (as a server encodes it for its clients),
    and the mean encoded size."""
    gc.collect()
    tracemalloc.start()
    b = MemoryBroker(retention)
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        b.publish(f"chat.room{i % 50}.msg", chat_event(i))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    encoded = sum(e.size for e in b.history("chat.>"))  # encodes what is retained
    gc.collect()
    held_encoded = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return held / n, held_encoded / n, encoded / n


def retained_bytes(n: int) -> dict[str, float]:
    """Memory per retained event: with a count bound only (the broker keeps the event
    objects) and with a byte bound (it keeps only their encoded bytes)."""
    counted, counted_encoded, size = held_per_event(
        n, Retention(max_events=n, max_per_subject=None)
    )
    bounded, _, _ = held_per_event(
        n, Retention(max_events=n, max_bytes=256 * 1024 * 1024, max_per_subject=None)
    )
    return {
        "retained_events": n,
        "encoded_bytes_per_event": round(size, 1),
        "bytes_per_retained_event": round(counted, 1),
        "bytes_per_retained_event_encoded": round(counted_encoded, 1),
        "retained_over_encoded": round(counted / size, 2),
        "retained_encoded_over_encoded": round(counted_encoded / size, 2),
        "byte_bounded_bytes_per_retained_event": round(bounded, 1),
        "byte_bounded_retained_over_encoded": round(bounded / size, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--retained", type=int, default=100_000)
    args = ap.parse_args()

    def fresh(n: int) -> list[Event]:
        # Built outside the timed region; a broker stamps a fresh event in place. Frozen
        # out of the cyclic GC so neither side pays for scanning the harness's own input.
        gc.unfreeze()
        events = [Event.create({"n": i, "text": "hello"}) for i in range(n)]
        gc.collect()
        gc.freeze()
        return events

    default = Retention()
    with_bytes = Retention(max_bytes=64 * 1024 * 1024)
    runs = [one_subscriber(fresh(args.events), default) for _ in range(args.runs)]
    runs_nb = [one_subscriber(fresh(args.events), with_bytes) for _ in range(args.runs)]
    many = [batched(fresh(args.events), default) for _ in range(args.runs)]
    # the 100-pattern Subject baseline is slow: a tenth of the events
    fan = [hundred_patterns(fresh(args.events // 10), default) for _ in range(args.runs)]
    mem = statistics.median(r[0] for r in runs)
    sub = statistics.median(r[1] for r in runs)
    mem_nb = statistics.median(r[0] for r in runs_nb)
    sub_nb = statistics.median(r[1] for r in runs_nb)
    fmem = statistics.median(r[0] for r in fan)
    fsub = statistics.median(r[1] for r in fan)
    print(
        orjson.dumps(
            {
                "benchmark": "broker",
                "events": args.events,
                "runs": args.runs,
                "memory_eps": round(mem),
                "subject_eps": round(sub),
                "speedup_vs_subject": round(mem / sub, 2),
                "memory_publish_many_eps": round(statistics.median(many)),
                "publish_many_speedup_vs_subject": round(statistics.median(many) / sub, 2),
                "memory_with_byte_retention_eps": round(mem_nb),
                "speedup_vs_subject_with_byte_retention": round(mem_nb / sub_nb, 2),
                "patterns100_memory_eps": round(fmem),
                "patterns100_subject_eps": round(fsub),
                "patterns100_speedup_vs_subject": round(fmem / fsub, 2),
                **retained_bytes(args.retained),
            }
        ).decode()
    )


if __name__ == "__main__":
    main()

"""Operator throughput: rxstreams vs stock reactivex vs a plain Python loop, one run.

Prints one JSON line per scenario:
1. filter -> map -> batch(count=100) over 1,000,000 events (the headline targets);
2. routing into 10 branches (rxstreams ``route`` vs ``share`` + 10 ``filter``s vs a loop);
3. time-bounded batching (``batch(count=100, within=60)``) vs count-only batching.

Both Rx pipelines read the same lean synchronous source (``streams.from_iterable``), so
the ratio measures the operators; the loop calls the same predicate and mapper. Each
figure is the median of RUNS runs; the machine is noisy, so ratios are what matter.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reactivex import operators as ops

from operators import batch, route, select, where
from streams import from_iterable

N = 1_000_000
RUNS = 5
DATA = list(range(N))
SOURCE = "streams.from_iterable (same lean source for rxstreams and reactivex)"


def pred(x: int) -> bool:
    return x % 3 != 0


def mapper(x: int) -> int:
    return x + 1


def median_seconds(run: Callable[[], Any]) -> float:
    times = []
    for _ in range(RUNS):
        gc.collect()
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rxstreams_pipeline() -> list[list[int]]:
    out: list[list[int]] = []
    from_iterable(DATA).pipe(where(pred), select(mapper), batch(count=100)).subscribe(out.append)
    return out


def reactivex_pipeline() -> list[list[int]]:
    out: list[list[int]] = []
    from_iterable(DATA).pipe(
        ops.filter(pred), ops.map(mapper), ops.buffer_with_count(100)
    ).subscribe(out.append)
    return out


def loop_pipeline() -> list[list[int]]:
    out: list[list[int]] = []
    buf: list[int] = []
    for x in DATA:
        if pred(x):
            buf.append(mapper(x))
            if len(buf) >= 100:
                out.append(buf)
                buf = []
    if buf:
        out.append(buf)
    return out


NAMES = [str(i) for i in range(10)]


def branch_of(x: int) -> str:
    return NAMES[x % 10]


def rxstreams_route() -> list[int]:
    counts = [0] * 10
    bs = from_iterable(DATA).pipe(route(branch_of, NAMES))
    for i, name in enumerate(NAMES):
        bs[name].subscribe(lambda _, i=i: counts.__setitem__(i, counts[i] + 1))
    bs.connect()
    return counts


def reactivex_route() -> list[int]:
    counts = [0] * 10
    shared = from_iterable(DATA).pipe(ops.publish())
    for i, name in enumerate(NAMES):
        shared.pipe(ops.filter(lambda x, name=name: branch_of(x) == name)).subscribe(
            lambda _, i=i: counts.__setitem__(i, counts[i] + 1)
        )
    shared.connect()
    return counts


def loop_route() -> list[int]:
    counts = [0] * 10
    sinks = {
        name: (lambda _, i=i: counts.__setitem__(i, counts[i] + 1)) for i, name in enumerate(NAMES)
    }
    for x in DATA:
        sinks[branch_of(x)](x)
    return counts


def batching(within: float | None) -> Callable[[], None]:
    async def main() -> None:  # the running loop's scheduler drives the timer
        out: list[list[int]] = []
        from_iterable(DATA).pipe(batch(count=100, within=within)).subscribe(out.append)
        assert sum(map(len, out)) == N

    return lambda: asyncio.run(main())


def main() -> None:
    assert rxstreams_pipeline() == reactivex_pipeline() == loop_pipeline()
    ours, rx, loop = (
        median_seconds(f) for f in (rxstreams_pipeline, reactivex_pipeline, loop_pipeline)
    )
    print(json.dumps({
        "benchmark": "operators.filter_map_batch",
        "events": N, "runs": RUNS, "source": SOURCE,
        "rxstreams_eps": round(N / ours), "reactivex_eps": round(N / rx),
        "loop_eps": round(N / loop),
        "speedup_vs_reactivex": round(rx / ours, 2), "slowdown_vs_loop": round(ours / loop, 2),
        "targets": {"speedup_vs_reactivex": ">=4", "slowdown_vs_loop": "<=1.5"},
    }))  # fmt: skip
    assert rxstreams_route() == reactivex_route() == loop_route()
    ours, rx, loop = (median_seconds(f) for f in (rxstreams_route, reactivex_route, loop_route))
    print(json.dumps({
        "benchmark": "operators.route_10_branches",
        "events": N, "runs": RUNS, "source": SOURCE,
        "rxstreams_eps": round(N / ours), "reactivex_eps": round(N / rx),
        "loop_eps": round(N / loop),
        "speedup_vs_reactivex": round(rx / ours, 2), "slowdown_vs_loop": round(ours / loop, 2),
        "baseline": "reactivex: publish() + 10 x filter(key == branch); loop: dict dispatch",
    }))  # fmt: skip
    timed, count_only = median_seconds(batching(60.0)), median_seconds(batching(None))
    print(json.dumps({
        "benchmark": "operators.time_bounded_batch",
        "events": N, "runs": RUNS, "source": SOURCE,
        "timed_eps": round(N / timed), "count_only_eps": round(N / count_only),
        "timed_vs_count_only": round(count_only / timed, 2), "target": ">=0.8",
    }))  # fmt: skip


if __name__ == "__main__":
    main()

"""Operator throughput: rxstreams vs stock reactivex vs a plain Python loop, one run.

Prints one JSON line per scenario:
1. filter -> map -> batch(count=100) over 1,000,000 events (the headline targets);
2. routing into 10 branches (rxstreams ``route`` vs ``share`` + 10 ``filter``s vs a loop);
3. time-bounded batching (``batch(count=100, within=60)``) vs count-only batching, and
   leading-edge batching (``leading=True``): first the delay an event waits when events come
   one at a time, 100 ms apart, with ``within=0.05`` (the realistic case), then throughput
   on a burst against trailing batching;
4. the joins (``lookup``, ``interval_join``, ``join_window``) against a dict-based loop doing
   the same join over the same events (target: at most 2x the loop's time). The two join
   inputs come from one time-ordered stream split by ``route`` (the realistic case: both
   sides interleaved in time, state expiring as the watermark moves); the loop reads the
   same list and calls the same key and timestamp functions.

Both Rx pipelines read the same lean synchronous source (``streams.from_iterable``), so
the ratio measures the operators; the loop calls the same predicate and mapper. Each
figure is the median of RUNS runs; the machine is noisy, so ratios are what matter.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reactivex import operators as ops
from reactivex.subject import Subject

from operators import batch, interval_join, join_window, lookup, route, select, tumbling, where
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


def paced_delays(leading: bool, n: int = 20, gap: float = 0.1) -> list[float]:
    """Seconds each of ``n`` events, ``gap`` apart, waits in ``batch(within=0.05)``."""
    delays: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        subject: Subject[int] = Subject()
        sent: dict[int, float] = {}

        def got(items: list[int]) -> None:
            now = loop.time()
            delays.extend(now - sent[x] for x in items)

        subject.pipe(batch(within=0.05, leading=leading)).subscribe(got)
        for i in range(n):
            sent[i] = loop.time()
            subject.on_next(i)
            await asyncio.sleep(gap)
        subject.on_completed()

    asyncio.run(main())
    return delays


def burst(leading: bool) -> Callable[[], None]:
    async def main() -> None:
        out: list[list[int]] = []
        from_iterable(DATA).pipe(batch(count=100, within=60, leading=leading)).subscribe(out.append)
        assert sum(map(len, out)) == N

    return lambda: asyncio.run(main())


# -- joins ---------------------------------------------------------------------------------

N_JOIN = 200_000
KEYS = 100
_rng = random.Random(12)
# (side, key, time): one time-ordered stream of left (0) and right (1) events
MERGED = [(_rng.randrange(2), _rng.randrange(KEYS), i / 1000) for i in range(N_JOIN)]
ROWS = [(k, f"name-{k}") for k in range(0, KEYS, 2)]  # the table knows every other key
LOOKUP_EVENTS = [(k, t) for _, k, t in MERGED]
LOWER, UPPER, WINDOW = -0.05, 0.05, 1.0


def key(e: tuple[Any, ...]) -> Any:
    return e[1]


def stamp(e: tuple[Any, ...]) -> float:
    return e[2]


def side(e: tuple[Any, ...]) -> int:
    return e[0]


def row_key(r: tuple[int, str]) -> int:
    return r[0]


def row_value(r: tuple[int, str]) -> str:
    return r[1]


def event_key(e: tuple[int, float]) -> int:
    return e[0]


def rxstreams_lookup() -> list[Any]:
    out: list[Any] = []
    op = lookup(from_iterable(ROWS), key=event_key, table_key=row_key, value=row_value)
    from_iterable(LOOKUP_EVENTS).pipe(op).subscribe(out.append)
    return out


def loop_lookup() -> list[Any]:
    out: list[Any] = []
    table = {}
    for r in ROWS:
        table[row_key(r)] = row_value(r)
    missing = object()
    for e in LOOKUP_EVENTS:
        v = table.get(event_key(e), missing)
        if v is not missing:
            out.append((e, v))
    return out


def two_sided(op: Callable[[Any], Any]) -> list[Any]:
    out: list[Any] = []
    bs = from_iterable(MERGED).pipe(route(side, [0, 1]))
    bs[0].pipe(op(bs[1])).subscribe(out.append)
    bs.connect()
    return out


def rxstreams_interval() -> list[Any]:
    return two_sided(lambda right: interval_join(right, key=key, lower=LOWER, upper=UPPER,
                                                 timestamp=stamp))  # fmt: skip


def loop_interval() -> list[Any]:
    out: list[Any] = []
    buffers: tuple[dict[Any, dict[int, Any]], ...] = ({}, {})
    expiry: list[Any] = []
    highest, wm = [-math.inf, -math.inf], -math.inf
    for seq, e in enumerate(MERGED):
        s, k, t = side(e), key(e), stamp(e)
        if t < wm:
            continue
        buffers[s].setdefault(k, {})[seq] = (t, e)
        heapq.heappush(expiry, (t + UPPER if s == 0 else t - LOWER, seq, s, k))
        others = buffers[1 - s].get(k)
        if others:
            if s == 0:
                out += [(e, o) for u, o in others.values() if t + LOWER <= u <= t + UPPER]
            else:
                out += [(o, e) for u, o in others.values() if u + LOWER <= t <= u + UPPER]
        if t > highest[s]:
            highest[s] = t
            w = min(highest)
            if w > wm:
                wm = w
                while expiry and expiry[0][0] < wm:
                    _, q, s2, k2 = heapq.heappop(expiry)
                    del buffers[s2][k2][q]
    return out


def rxstreams_window_join() -> list[Any]:
    return two_sided(lambda right: join_window(right, key=key, window=tumbling(WINDOW),
                                               timestamp=stamp))  # fmt: skip


def loop_window_join() -> list[Any]:
    out: list[Any] = []
    panes: dict[tuple[Any, int], tuple[list[Any], list[Any]]] = {}
    ends: list[tuple[float, int, Any]] = []
    highest, wm = [-math.inf, -math.inf], -math.inf

    def close(upto: float) -> None:
        while ends and ends[0][0] <= upto:
            end, i, k = heapq.heappop(ends)
            lefts, rights = panes.pop((k, i))
            pairs = [(a, b) for a in lefts for b in rights]
            if pairs:
                out.append((k, end - WINDOW, end, pairs))

    for e in MERGED:
        s, k, t = side(e), key(e), stamp(e)
        i = math.floor(t / WINDOW)
        if (i + 1) * WINDOW <= wm:
            continue
        pane = panes.get((k, i))
        if pane is None:
            pane = panes[(k, i)] = ([], [])
            heapq.heappush(ends, ((i + 1) * WINDOW, i, k))
        pane[s].append(e)
        if t > highest[s]:
            highest[s] = t
            w = min(highest)
            if w > wm:
                wm = w
                close(wm)
    close(math.inf)
    return out


def join_line(name: str, ours: Callable[[], Any], loop: Callable[[], Any], n: int) -> None:
    a, b = ours(), loop()
    assert len(a) > 0 and sorted(map(tuple, a)) == sorted(map(tuple, b)), name
    t_ours, t_loop = median_seconds(ours), median_seconds(loop)
    print(json.dumps({
        "benchmark": f"operators.{name}", "events": n, "runs": RUNS, "outputs": len(a),
        "rxstreams_eps": round(n / t_ours), "loop_eps": round(n / t_loop),
        "slowdown_vs_loop": round(t_ours / t_loop, 2), "target": "<=2",
        "baseline": "dict-based loop over the same events, same key/timestamp functions",
    }))  # fmt: skip


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
    lead, trail = paced_delays(True), paced_delays(False)
    lead_burst, trail_burst = median_seconds(burst(True)), median_seconds(burst(False))
    print(json.dumps({
        "benchmark": "operators.leading_batch",
        "paced": {"events": len(lead), "gap_s": 0.1, "within_s": 0.05,
                  "leading_delay_ms_p50": round(statistics.median(lead) * 1000, 2),
                  "trailing_delay_ms_p50": round(statistics.median(trail) * 1000, 2)},
        "burst": {"events": N, "runs": RUNS, "leading_eps": round(N / lead_burst),
                  "trailing_eps": round(N / trail_burst),
                  "leading_vs_trailing": round(trail_burst / lead_burst, 2)},
    }))  # fmt: skip
    join_line("lookup", rxstreams_lookup, loop_lookup, N_JOIN)
    join_line("interval_join", rxstreams_interval, loop_interval, N_JOIN)
    join_line("join_window", rxstreams_window_join, loop_window_join, N_JOIN)


if __name__ == "__main__":
    main()

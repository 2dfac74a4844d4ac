"""Fan-out: rxstreams' server against a peer server, same run, interleaved; one JSON line each.

Each side runs in its own process (the server, whose CPU time is read with
``time.process_time`` around each measurement) with a client process holding ``--clients``
connections (minimal asyncio WebSocket / SSE parsers, identical for both sides). Both
sides stay up for the whole run and their measurements alternate, so drift in the
machine's load hits both alike; the figures are medians over ``--reps``.

Cases (``--case``; without it every case below runs, the realistic one first):

- ``paced``: ``--events-per-s`` events per second (20 by default) to every client for
  ``--seconds``: server CPU per delivery and p50/p99 publish-to-receive latency
  (CLOCK_MONOTONIC is shared by processes on Linux).
- ``burst``: ``--events`` events, ``--burst`` of them per loop iteration (1: a chat or a
  ticker; 100: a batch import): server CPU per delivery.

Peers (``--peer``): ``naive`` is ``for c in clients: await c.send(payload)`` on aiohttp
(WebSocket ``send_bytes`` or an SSE ``StreamResponse.write``); ``aiohttp-sse`` is the
idiomatic aiohttp-sse server, a queue and a task per client (SSE only). Both send the same
CloudEvent bytes rxstreams sends. ``--write-delay`` sets rxstreams'
``ServerConfig.write_delay``; ``--loop uvloop`` runs both servers on uvloop.

``--floor`` adds a third server, not one anyone would ship: it writes one prebuilt frame
to each client's transport (no flow control, nothing per client). Its CPU per delivery is
the floor every server on this loop pays (mostly the kernel's TCP send, reported apart as
``*_kernel_us``); what rxstreams spends above it is its own work.

    python benchmarks/fanout.py                       # every case, 1,000 clients
    python benchmarks/fanout.py --case burst --burst 1 --transport sse --peer aiohttp-sse
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (
    Proc,
    add_cpu_route,
    client_frame,
    handshake,
    percentiles,
    raise_nofile,
    serve_forever,
    stdin_lines,
    take_messages,
    take_upgrade,
)

# A server under test: its app, how it publishes event i, and what runs after a publish
# (the naive peer sends there, as its handler would).
Publish = Callable[[int], None]
Settle = Callable[[], Coroutine[Any, Any, None]]


# -- servers -----------------------------------------------------------------------------
def bench_event(i: int) -> Any:
    from streams import Event

    return Event.create({"t": time.monotonic(), "i": i}, type="bench").stamped(
        "bench.tick", f"e-{i}"
    )


def sse_bytes(e: Any) -> bytes:
    return b"id: " + str(e.sequence).encode() + b"\ndata: " + e.encode() + b"\n\n"


async def _next_iteration() -> None:
    await asyncio.sleep(0)


def rxstreams_server(write_delay: float | None) -> tuple[Any, Publish, Settle]:
    from adapters.server import ServerConfig, create_app
    from streams import Event, MemoryBroker, Retention

    broker = MemoryBroker(Retention(max_events=10_000, max_bytes=None))
    cfg = ServerConfig(max_connections=100_000, ws_ping=None, heartbeat=60)
    if write_delay is not None:
        cfg = dataclasses.replace(cfg, write_delay=write_delay)

    def publish(i: int) -> None:
        broker.publish("bench.tick", Event.create({"t": time.monotonic(), "i": i}, type="b"))

    return create_app(broker, config=cfg), publish, _next_iteration


def naive_server(transport: str, raw: bool) -> tuple[Any, Publish, Settle]:
    """``for c in clients: await c.send(payload)`` on aiohttp; ``raw`` (the floor) writes
    one prebuilt frame to each client's transport instead, the least a server on this
    event loop can do per delivery (not a server anyone would ship: no flow control)."""
    from aiohttp import web

    from adapters.server.framing import http_chunk, ws_frame

    app = web.Application()
    clients: dict[Any, Any] = {}  # response -> its transport

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        clients[ws] = request.transport
        try:
            async for _ in ws:
                pass
        finally:
            clients.pop(ws, None)
        return ws

    async def sse_handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        clients[resp] = request.transport
        try:
            await asyncio.Event().wait()
        finally:
            clients.pop(resp, None)
        return resp

    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/sse", sse_handler)
    backlog: list[bytes] = []

    def publish(i: int) -> None:
        e = bench_event(i)
        backlog.append(e.encode() if transport == "ws" else sse_bytes(e))

    async def settle() -> None:  # the naive loop, run to completion per event
        payloads = list(backlog)
        backlog.clear()
        for payload in payloads:
            for c in list(clients):
                with contextlib.suppress(ConnectionError):
                    if transport == "ws":
                        await c.send_bytes(payload)
                    else:
                        await c.write(payload)

    async def settle_raw() -> None:
        payloads = list(backlog)
        backlog.clear()
        for payload in payloads:
            data = ws_frame(payload) if transport == "ws" else http_chunk(payload)
            for t in list(clients.values()):
                t.write(data)

    return app, publish, settle_raw if raw else settle


def aiohttp_sse_server() -> tuple[Any, Publish, Settle]:
    """The idiomatic aiohttp-sse server: a queue and a task per client."""
    from aiohttp import web
    from aiohttp_sse import sse_response

    app = web.Application()
    queues: set[asyncio.Queue[tuple[str, str]]] = set()

    async def sse_peer(request: web.Request) -> web.StreamResponse:
        q: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        queues.add(q)
        try:
            async with sse_response(request) as sse:
                while True:
                    data, id_ = await q.get()
                    await sse.send(data, id=id_)
        finally:
            queues.discard(q)
        return sse

    app.router.add_get("/sse", sse_peer)

    def publish(i: int) -> None:
        e = bench_event(i)
        item = (e.encode().decode(), str(e.sequence))
        for q in queues:
            q.put_nowait(item)

    return app, publish, _next_iteration


def add_bench_routes(app: Any, publish: Publish, settle: Settle) -> None:
    """``POST /bench/burst`` and ``/bench/paced`` publish; ``/bench/wait`` waits for the
    paced run to end."""
    from aiohttp import web

    state: dict[str, Any] = {"task": None}

    async def burst(request: web.Request) -> web.Response:
        n = int(request.query["n"])
        per = int(request.query["per"])
        for i in range(0, n, per):
            for j in range(i, min(n, i + per)):
                publish(j)
            await settle()
            await asyncio.sleep(0)  # the next events in the next loop iteration
        return web.Response(text="ok")

    async def paced(request: web.Request) -> web.Response:
        per_s = float(request.query["events_per_s"])
        n = int(request.query["n"])

        async def go() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(n):
                delay = start + i / per_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                publish(i)
                await settle()

        state["task"] = asyncio.get_running_loop().create_task(go())
        return web.Response(text="ok")

    async def wait(request: web.Request) -> web.Response:
        if state["task"] is not None:
            await state["task"]
        return web.Response(text="ok")

    app.router.add_post("/bench/burst", burst)
    app.router.add_post("/bench/paced", paced)
    app.router.add_post("/bench/wait", wait)


def run_server(mode: str, transport: str, write_delay: float | None, loop: str) -> None:
    if mode == "rxstreams":
        app, publish, settle = rxstreams_server(write_delay)
    elif mode in ("naive", "floor"):
        app, publish, settle = naive_server(transport, raw=mode == "floor")
    else:
        app, publish, settle = aiohttp_sse_server()
    add_bench_routes(app, publish, settle)
    add_cpu_route(app, profile=mode == "rxstreams")
    serve_forever(app, loop)


# -- clients -----------------------------------------------------------------------------
_SUBSCRIBE = orjson.dumps({"op": "subscribe", "id": "s", "pattern": "bench.>"})


class Stats:
    def __init__(self, host: str) -> None:
        self.host = host
        self.received = 0
        self.expect = 1 << 62
        self.done: asyncio.Future[None] | None = None
        self.measuring = False
        self.latencies: list[float] = []

    def got(self, k: int, payloads: list[bytes]) -> None:
        self.received += k
        if self.measuring:
            now = time.monotonic()
            for p in payloads:
                value = orjson.loads(p)
                for e in value if isinstance(value, list) else (value,):
                    self.latencies.append(now - e["data"]["t"])
        if self.received >= self.expect and self.done is not None and not self.done.done():
            self.done.set_result(None)


class WsConn(asyncio.Protocol):
    """A minimal WebSocket client: handshake, then unmasked server frames."""

    def __init__(self, stats: Stats, subscribe: bool) -> None:
        self.stats = stats
        self.subscribe = subscribe
        self.buf = bytearray()
        self.open = False
        self.events = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(handshake("/ws", self.stats.host))

    def _upgraded(self) -> bool:
        try:
            if not take_upgrade(self.buf):
                return False
        except RuntimeError as exc:
            self.ready.set_exception(exc)
            return False
        self.open = True
        if self.subscribe:
            self.transport.write(client_frame(_SUBSCRIBE))
        else:
            self.ready.set_result(None)
        return True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open and not self._upgraded():
            return
        k = 0
        payloads: list[bytes] = []
        for payload in take_messages(self.buf):
            if payload.startswith(b'{"op"'):
                if b'"subscribed"' in payload and not self.ready.done():
                    self.ready.set_result(None)
            else:
                k += payload.count(b'"specversion"')
                payloads.append(payload)
        if k:
            self.events += k
            self.stats.got(k, payloads)


class SseConn(asyncio.Protocol):
    """A minimal SSE client: counts ``data:`` lines (chunk-size lines are skipped)."""

    def __init__(self, stats: Stats, path: str, ready_on: bytes) -> None:
        self.stats = stats
        self.path = path
        self.ready_on = ready_on
        self.buf = b""
        self.events = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.stats.host}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self.buf = buf
            return
        self.buf = buf[cut + 1 :]
        if not self.ready.done():
            if self.ready_on in buf:
                self.ready.set_result(None)
            return
        payloads = [
            line[6:].rstrip(b"\r") for line in buf[:cut].split(b"\n") if line.startswith(b"data: ")
        ]
        if payloads:
            self.events += len(payloads)
            self.stats.got(len(payloads), payloads)


Conn = WsConn | SseConn


async def connect_all(port: int, count: int, mode: str, transport: str) -> tuple[Stats, list[Conn]]:
    """``count`` connections, opened 100 at a time, each subscribed and ready."""
    loop = asyncio.get_running_loop()
    stats = Stats(f"127.0.0.1:{port}")

    def conn() -> Conn:
        if transport == "ws":
            return WsConn(stats, subscribe=mode == "rxstreams")
        if mode == "rxstreams":
            return SseConn(stats, "/events/bench.%3E", b"retry:")
        return SseConn(stats, "/sse", b"\r\n\r\n")

    conns: list[Conn] = []
    for i in range(0, count, 100):
        batch = []
        for _ in range(min(100, count - i)):
            _, proto = await loop.create_connection(conn, "127.0.0.1", port)
            batch.append(proto)
        await asyncio.gather(*(c.ready for c in batch))
        conns.extend(batch)
    return stats, conns


async def await_expected(stats: Stats, conns: list[Conn], what: str) -> None:
    """Until every expected delivery arrived; every minute, say where a lost one left us."""
    assert stats.done is not None
    while True:
        try:
            await asyncio.wait_for(asyncio.shield(stats.done), 60)
            return
        except TimeoutError:
            counts = sorted(c.events for c in conns)
            print(
                f"{what} waiting: {stats.received}/{stats.expect},"
                f" per connection {counts[:3]}..{counts[-3:]}",
                file=sys.stderr,
            )


def run_clients(port: int, count: int, mode: str, transport: str) -> None:
    """The client process: ``expect N`` (answers ARMED, then DONE once N deliveries
    arrived), ``measure`` (latencies from now), ``report`` (p50/p99 since ``measure``)."""
    raise_nofile()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stats, conns = await connect_all(port, count, mode, transport)
        reader = await stdin_lines()
        print("READY", flush=True)
        while line := (await reader.readline()).decode().split():
            cmd = line[0]
            if cmd == "expect":
                stats.received = 0
                stats.expect = int(line[1])
                stats.done = loop.create_future()
                print("ARMED", flush=True)  # counting from zero before the events start
                await await_expected(stats, conns, f"{mode} {transport}")
                print("DONE", flush=True)
            elif cmd == "measure":
                stats.latencies.clear()
                stats.measuring = True
                print("OK", flush=True)
            elif cmd == "report":
                stats.measuring = False
                p50, p99 = percentiles(stats.latencies)
                print(json.dumps({"n": len(stats.latencies), "p50": p50, "p99": p99}), flush=True)

    asyncio.run(main())


# -- orchestrator ------------------------------------------------------------------------
class Side:
    """One server under test with its client process."""

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.mode = mode
        self.clients: Proc | None = None
        self.server = Proc(
            __file__,
            [
                "--role=server",
                f"--mode={mode}",
                f"--transport={args.transport}",
                *([] if args.write_delay is None else [f"--write-delay={args.write_delay}"]),
                f"--loop={args.loop}",
            ],
        )
        port = int(self.server.line())
        self.base = f"http://127.0.0.1:{port}"
        self.clients = Proc(
            __file__,
            [
                "--role=clients",
                f"--port={port}",
                f"--count={args.clients}",
                f"--mode={mode}",
                f"--transport={args.transport}",
            ],
        )
        assert self.clients.line() == "READY"
        self.n = args.clients

    def call(self, path: str, method: str = "POST") -> str:
        import urllib.request

        req = urllib.request.Request(self.base + path, method=method)
        with urllib.request.urlopen(req, timeout=300) as r:
            return str(r.read().decode())

    def cpu(self) -> float:
        return float(self.call("/bench/cpu", "GET"))

    def _measured(self, run: Callable[[], None], deliveries: int) -> dict[str, float]:
        """Server CPU microseconds per delivery while ``run`` runs, and its kernel share."""
        _, sys0 = self.server.cpu_split()
        cpu0 = self.cpu()
        run()
        cpu = self.cpu() - cpu0
        _, sys1 = self.server.cpu_split()
        return {"us": cpu * 1e6 / deliveries, "sys_us": (sys1 - sys0) * 1e6 / deliveries}

    def burst(self, events: int, per: int) -> dict[str, float]:
        assert self.clients is not None
        clients = self.clients
        assert clients.send(f"expect {events * self.n}") == "ARMED"

        def run() -> None:
            self.call(f"/bench/burst?n={events}&per={per}")
            assert clients.line() == "DONE"

        return self._measured(run, events * self.n)

    def paced(self, events_per_s: float, seconds: float) -> dict[str, float]:
        assert self.clients is not None
        clients = self.clients
        n = max(1, int(events_per_s * seconds))
        assert clients.send("measure") == "OK"
        assert clients.send(f"expect {n * self.n}") == "ARMED"

        def run() -> None:
            self.call(f"/bench/paced?events_per_s={events_per_s}&n={n}")
            self.call("/bench/wait")
            assert clients.line() == "DONE"

        r = self._measured(run, n * self.n)
        lat = json.loads(clients.send("report"))
        return r | {"p50": lat["p50"], "p99": lat["p99"]}

    def measure(self, args: argparse.Namespace) -> dict[str, float]:
        if args.case == "burst":
            return self.burst(args.events, args.burst)
        return self.paced(args.events_per_s, args.seconds)

    def stop(self) -> None:
        if self.clients is not None:
            self.clients.stop()
        self.server.stop()


def write_delay_ms(delay: float | None) -> float:
    if delay is None:
        from adapters.server import ServerConfig

        delay = ServerConfig().write_delay
    return delay * 1000


def measure_sides(args: argparse.Namespace, modes: list[str]) -> dict[str, list[dict[str, float]]]:
    """Every side's results, ``--reps`` times, the order alternating between reps."""
    sides = [Side(mode, args) for mode in modes]
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    try:
        if args.case == "burst":
            for side in sides:  # warm up
                side.burst(min(args.events, 10), args.burst)
        for rep in range(args.reps):
            for side in sides if rep % 2 == 0 else sides[::-1]:
                results[side.mode].append(side.measure(args))
                time.sleep(0.2)
    finally:
        for side in sides:
            side.stop()
    return results


def med(rs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in rs), 3)


def spread(rs: list[dict[str, float]]) -> float:
    v = [r["us"] for r in rs]
    return round((max(v) - min(v)) / statistics.median(v), 2)


def case_settings(args: argparse.Namespace, peer: str) -> dict[str, Any]:
    line: dict[str, Any] = {
        "case": args.case,
        "transport": args.transport,
        "peer": peer,
        "clients": args.clients,
        "loop": args.loop,
        "write_delay_ms": write_delay_ms(args.write_delay),
    }
    if args.case == "burst":
        return line | {"burst": args.burst, "events": args.events}
    return line | {"events_per_s": args.events_per_s, "seconds": args.seconds}


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    peer = args.peer or ("aiohttp-sse" if args.transport == "sse" else "naive")
    if peer == "aiohttp-sse" and args.transport != "sse":
        raise SystemExit("--peer aiohttp-sse serves SSE only")
    modes = ["rxstreams", peer, *(["floor"] if args.floor else [])]
    results = measure_sides(args, modes)
    ours, theirs = results["rxstreams"], results[peer]
    line = case_settings(args, peer) | {
        "reps": args.reps,
        "rxstreams_us_per_delivery": med(ours, "us"),
        "peer_us_per_delivery": med(theirs, "us"),
        "cpu_ratio": round(med(ours, "us") / med(theirs, "us"), 3),
        "rxstreams_kernel_us": med(ours, "sys_us"),
        "peer_kernel_us": med(theirs, "sys_us"),
        "spread_rxstreams": spread(ours),
        "spread_peer": spread(theirs),
    }
    if args.floor:
        line |= {
            "floor_us_per_delivery": med(results["floor"], "us"),
            "floor_kernel_us": med(results["floor"], "sys_us"),
        }
    if args.case == "paced":
        line |= {
            "rxstreams_p50_ms": med(ours, "p50"),
            "peer_p50_ms": med(theirs, "p50"),
            "rxstreams_p99_ms": med(ours, "p99"),
            "peer_p99_ms": med(theirs, "p99"),
        }
    return line


# Every case, the realistic ones first: (case, transport, burst, write delay, loop); a
# write delay of None is the server's default (ServerConfig.write_delay).
ALL_CASES: list[tuple[str, str, int, float | None, str]] = [
    ("paced", "ws", 1, None, "asyncio"),
    ("paced", "sse", 1, None, "asyncio"),
    ("burst", "ws", 1, None, "asyncio"),
    ("burst", "sse", 1, None, "asyncio"),
    ("burst", "ws", 1, 0.0, "asyncio"),
    ("burst", "sse", 1, 0.0, "asyncio"),
    ("paced", "ws", 1, None, "uvloop"),
    ("burst", "ws", 1, None, "uvloop"),
    ("burst", "ws", 1, 0.0, "uvloop"),
    ("burst", "sse", 1, 0.0, "uvloop"),
    ("burst", "ws", 100, None, "asyncio"),
    ("burst", "sse", 100, None, "asyncio"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--case", choices=["paced", "burst"])
    ap.add_argument("--transport", choices=["ws", "sse"], default="ws")
    ap.add_argument("--peer", choices=["naive", "aiohttp-sse"])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=1, help="events per loop iteration")
    ap.add_argument("--events", type=int, default=100, help="events per burst measurement")
    ap.add_argument("--events-per-s", type=float, default=20.0, help="paced: events/s")
    ap.add_argument("--seconds", type=float, default=5.0, help="paced: seconds per rep")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--write-delay", type=float, help="rxstreams, seconds (default: the server's)")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also measure the floor: one prebuilt frame written to each client's transport",
    )
    ap.add_argument("--role", default="orchestrator", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="rxstreams", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "server":
        run_server(args.mode, args.transport, args.write_delay, args.loop)
        return
    if args.role == "clients":
        run_clients(args.port, args.count, args.mode, args.transport)
        return
    if args.case is not None:
        print(json.dumps(run_case(args)), flush=True)
        return
    for case, transport, burst, delay, loop in ALL_CASES:
        one = argparse.Namespace(**vars(args))
        one.case, one.transport, one.burst, one.write_delay, one.loop = (
            case,
            transport,
            burst,
            delay,
            loop,
        )
        one.reps = 3 if case == "paced" else args.reps
        print(json.dumps(run_case(one)), flush=True)


if __name__ == "__main__":
    main()

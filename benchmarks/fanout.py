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
import resource
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# -- servers -----------------------------------------------------------------------------
def run_server(mode: str, transport: str, write_delay: float | None, loop: str) -> None:
    from aiohttp import web

    from adapters.server.loop import run
    from streams import Event

    raise_nofile()
    state: dict[str, Any] = {"task": None}
    app: web.Application

    def make(i: int) -> Event:
        return Event.create({"t": time.monotonic(), "i": i}, type="bench").stamped(
            "bench.tick", f"e-{i}"
        )

    if mode == "rxstreams":
        from adapters.server import ServerConfig, create_app
        from streams import MemoryBroker, Retention

        broker = MemoryBroker(Retention(max_events=10_000, max_bytes=None))
        cfg = ServerConfig(max_connections=100_000, ws_ping=None, heartbeat=60)
        if write_delay is not None:
            cfg = dataclasses.replace(cfg, write_delay=write_delay)
        app = create_app(broker, config=cfg)

        def publish(i: int) -> None:
            broker.publish("bench.tick", Event.create({"t": time.monotonic(), "i": i}, type="b"))

        async def settle() -> None:
            await asyncio.sleep(0)

    elif mode == "naive":
        app = web.Application()
        clients: list[Any] = []
        done = asyncio.Event

        async def ws_handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            clients.append(ws)
            try:
                async for _ in ws:
                    pass
            finally:
                clients.remove(ws)
            return ws

        async def sse_handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            clients.append(resp)
            try:
                await done().wait()
            finally:
                clients.remove(resp)
            return resp

        app.router.add_get("/ws", ws_handler)
        app.router.add_get("/sse", sse_handler)
        backlog: list[bytes] = []

        def publish(i: int) -> None:
            e = make(i)
            if transport == "ws":
                backlog.append(e.encode())
            else:
                backlog.append(
                    b"id: " + str(e.sequence).encode() + b"\ndata: " + e.encode() + b"\n\n"
                )

        async def settle() -> None:
            # the naive loop, run to completion for each event, as a handler would
            payloads = list(backlog)
            backlog.clear()
            for payload in payloads:
                for c in list(clients):
                    with contextlib.suppress(ConnectionError):
                        if transport == "ws":
                            await c.send_bytes(payload)
                        else:
                            await c.write(payload)

    else:  # aiohttp-sse: a queue and a task per client
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
            e = make(i)
            item = (e.encode().decode(), str(e.sequence))
            for q in queues:
                q.put_nowait(item)

        async def settle() -> None:
            await asyncio.sleep(0)

    async def burst(request: web.Request) -> web.Response:
        n = int(request.query["n"])
        per = int(request.query["per"])
        for i in range(0, n, per):
            for j in range(i, min(n, i + per)):
                publish(j)
            await settle()
            await asyncio.sleep(0)  # the next events in the next loop iteration
        return web.Response(text="ok")

    async def cpu(request: web.Request) -> web.Response:
        return web.Response(text=repr(time.process_time()))

    profile = os.environ.get("FANOUT_PROFILE")  # a path: cProfile the rxstreams server
    if profile and mode == "rxstreams":
        import cProfile

        prof = cProfile.Profile()
        measure = cpu

        async def cpu(request: web.Request) -> web.Response:  # type: ignore[no-redef]
            if state.get("profiling"):
                prof.disable()
                prof.dump_stats(profile)
            else:
                prof.enable()
            state["profiling"] = not state.get("profiling")
            return await measure(request)

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
    app.router.add_get("/bench/cpu", cpu)
    app.router.add_post("/bench/paced", paced)
    app.router.add_post("/bench/wait", wait)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    run(main(), loop)


# -- clients -----------------------------------------------------------------------------
_SUBSCRIBE = orjson.dumps({"op": "subscribe", "id": "s", "pattern": "bench.>"})


def client_frame(payload: bytes) -> bytes:
    """A masked text frame with an all-zero mask (payload unchanged)."""
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    return head + b"\0\0\0\0" + payload


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
        transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {self.stats.host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(bytes(buf[:200]).decode()))
                return
            del buf[: end + 4]
            self.open = True
            if self.subscribe:
                self.transport.write(client_frame(_SUBSCRIBE))
            else:
                self.ready.set_result(None)
        pos = 0
        n = len(buf)
        k = 0
        payloads: list[bytes] = []
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            if b1 < 126:
                start = pos + 2
            elif b1 == 126:
                if n - pos < 4:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + b1
            if end > n:
                break
            if buf[pos] & 0x0F in (1, 2):
                payload = bytes(buf[start:end])
                if payload.startswith(b'{"op"'):
                    if b'"subscribed"' in payload and not self.ready.done():
                        self.ready.set_result(None)
                else:
                    k += payload.count(b'"specversion"')
                    payloads.append(payload)
            pos = end
        if pos:
            del buf[:pos]
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


def run_clients(port: int, count: int, mode: str, transport: str) -> None:
    raise_nofile()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stats = Stats(f"127.0.0.1:{port}")

        def conn() -> WsConn | SseConn:
            if transport == "ws":
                return WsConn(stats, subscribe=mode == "rxstreams")
            if mode == "rxstreams":
                return SseConn(stats, "/events/bench.%3E", b"retry:")
            return SseConn(stats, "/sse", b"\r\n\r\n")

        conns: list[WsConn | SseConn] = []
        for i in range(0, count, 100):
            batch = []
            for _ in range(min(100, count - i)):
                _, proto = await loop.create_connection(conn, "127.0.0.1", port)
                batch.append(proto)
            await asyncio.gather(*(c.ready for c in batch))
            conns.extend(batch)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print("READY", flush=True)
        while line := (await reader.readline()).decode().split():
            cmd = line[0]
            if cmd == "expect":
                stats.received = 0
                stats.expect = int(line[1])
                stats.done = loop.create_future()
                print("ARMED", flush=True)  # counting from zero before the events start
                while True:
                    try:
                        await asyncio.wait_for(asyncio.shield(stats.done), 60)
                        break
                    except TimeoutError:  # say where a lost delivery left us
                        counts = sorted(c.events for c in conns)
                        print(
                            f"{mode} {transport} waiting: {stats.received}/{stats.expect},"
                            f" per connection {counts[:3]}..{counts[-3:]}",
                            file=sys.stderr,
                        )
                print("DONE", flush=True)
            elif cmd == "measure":
                stats.latencies.clear()
                stats.measuring = True
                print("OK", flush=True)
            elif cmd == "report":
                stats.measuring = False
                lat = sorted(stats.latencies) or [0.0]
                p50, p99 = (lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 for q in (0.5, 0.99))
                print(json.dumps({"n": len(lat), "p50": p50, "p99": p99}), flush=True)

    asyncio.run(main())


# -- orchestrator ------------------------------------------------------------------------
class Proc:
    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE)}
        self.p = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def line(self) -> str:
        assert self.p.stdout is not None
        out = self.p.stdout.readline()
        if not out:
            raise RuntimeError(f"subprocess ended: {self.p.args}")
        return out.strip()

    def write(self, text: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def send(self, text: str) -> str:
        self.write(text)
        return self.line()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.p.kill()
        self.p.wait()


class Side:
    """One server under test with its client process."""

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.mode = mode
        self.clients: Proc | None = None
        self.server = Proc(
            [
                "--role=server",
                f"--mode={mode}",
                f"--transport={args.transport}",
                *([] if args.write_delay is None else [f"--write-delay={args.write_delay}"]),
                f"--loop={args.loop}",
            ]
        )
        port = int(self.server.line())
        self.base = f"http://127.0.0.1:{port}"
        self.clients = Proc(
            [
                "--role=clients",
                f"--port={port}",
                f"--count={args.clients}",
                f"--mode={mode}",
                f"--transport={args.transport}",
            ]
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

    def burst(self, events: int, per: int) -> float:
        """Server CPU microseconds per delivery."""
        assert self.clients is not None
        assert self.clients.send(f"expect {events * self.n}") == "ARMED"
        cpu0 = self.cpu()
        self.call(f"/bench/burst?n={events}&per={per}")
        assert self.clients.line() == "DONE"
        return (self.cpu() - cpu0) * 1e6 / (events * self.n)

    def paced(self, events_per_s: float, seconds: float) -> dict[str, float]:
        assert self.clients is not None
        n = max(1, int(events_per_s * seconds))
        assert self.clients.send("measure") == "OK"
        assert self.clients.send(f"expect {n * self.n}") == "ARMED"
        cpu0 = self.cpu()
        self.call(f"/bench/paced?events_per_s={events_per_s}&n={n}")
        self.call("/bench/wait")
        assert self.clients.line() == "DONE"
        us = (self.cpu() - cpu0) * 1e6 / (n * self.n)
        lat = json.loads(self.clients.send("report"))
        return {"us": us, "p50": lat["p50"], "p99": lat["p99"]}

    def stop(self) -> None:
        if self.clients is not None:
            self.clients.stop()
        self.server.stop()


def write_delay_ms(delay: float | None) -> float:
    if delay is None:
        from adapters.server import ServerConfig

        delay = ServerConfig().write_delay
    return delay * 1000


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    peer = args.peer or ("aiohttp-sse" if args.transport == "sse" else "naive")
    if peer == "aiohttp-sse" and args.transport != "sse":
        raise SystemExit("--peer aiohttp-sse serves SSE only")
    sides = [Side("rxstreams", args), Side(peer, args)]
    try:
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        if args.case == "burst":
            for side in sides:  # warm up both
                side.burst(min(args.events, 10), args.burst)
        for rep in range(args.reps):
            order = sides if rep % 2 == 0 else sides[::-1]
            for side in order:
                if args.case == "burst":
                    r = {"us": side.burst(args.events, args.burst)}
                else:
                    r = side.paced(args.events_per_s, args.seconds)
                (ours if side is sides[0] else theirs).append(r)
                time.sleep(0.2)
    finally:
        for side in sides:
            side.stop()

    def med(rs: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(r[key] for r in rs), 3)

    def spread(rs: list[dict[str, float]]) -> float:
        v = [r["us"] for r in rs]
        return round((max(v) - min(v)) / statistics.median(v), 2)

    line: dict[str, Any] = {
        "case": args.case,
        "transport": args.transport,
        "peer": peer,
        "clients": args.clients,
        "loop": args.loop,
        "write_delay_ms": write_delay_ms(args.write_delay),
    }
    if args.case == "burst":
        line |= {"burst": args.burst, "events": args.events}
    else:
        line |= {"events_per_s": args.events_per_s, "seconds": args.seconds}
    line |= {
        "reps": args.reps,
        "rxstreams_us_per_delivery": med(ours, "us"),
        "peer_us_per_delivery": med(theirs, "us"),
        "cpu_ratio": round(med(ours, "us") / med(theirs, "us"), 3),
        "spread_rxstreams": spread(ours),
        "spread_peer": spread(theirs),
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

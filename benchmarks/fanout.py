"""WebSocket fan-out: rxstreams' server against a naive aiohttp broadcast loop, same run.

Prints one JSON line. Three processes per server under test: this orchestrator, the
server (whose CPU time is measured with ``time.process_time`` around each burst), and a
client process holding ``--clients`` raw WebSocket connections (a minimal asyncio frame
parser, so the client side costs little and is identical for both servers).

- burst: ``--burst`` events published back to back, repeated ``--bursts`` times; server
  CPU microseconds per delivery (median over bursts).
- paced: ``--rate`` deliveries per second (events/s = rate / clients) for ``--seconds``;
  p50/p99 publish-to-receive latency over every delivery (CLOCK_MONOTONIC is shared by
  processes on Linux).

The naive server is ``for ws in clients: await ws.send_bytes(payload)``.

    python benchmarks/fanout.py --clients 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
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
def run_server(mode: str) -> None:
    from aiohttp import web

    raise_nofile()
    state: dict[str, Any] = {"task": None}

    if mode == "rxstreams":
        from adapters.server import ServerConfig, create_app
        from streams import Event, MemoryBroker, Retention

        broker = MemoryBroker(Retention(max_events=10_000, max_bytes=None))
        app = create_app(broker, config=ServerConfig(max_connections=100_000, ws_ping=None))

        def publish(i: int) -> None:
            broker.publish(
                "bench.tick", Event.create({"t": time.monotonic(), "i": i}, type="bench")
            )
    else:
        from streams import Event

        app = web.Application()
        clients: list[web.WebSocketResponse] = []

        async def ws_handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            clients.append(ws)
            try:
                async for _ in ws:
                    pass
            finally:
                clients.remove(ws)
            return ws

        app.router.add_get("/ws", ws_handler)
        pending: list[asyncio.Task[None]] = []

        async def broadcast(payload: bytes) -> None:
            for ws in list(clients):
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(payload)

        def publish(i: int) -> None:
            e = Event.create({"t": time.monotonic(), "i": i}, type="bench")
            # the naive loop, run to completion before the next event (as a handler would)
            pending.append(asyncio.get_running_loop().create_task(broadcast(e.encode())))

    async def burst(request: web.Request) -> web.Response:
        n = int(request.query["n"])
        for i in range(n):
            publish(i)
            if mode == "naive":
                await pending.pop()
        return web.Response(text="ok")

    async def cpu(request: web.Request) -> web.Response:
        return web.Response(text=repr(time.process_time()))

    async def paced(request: web.Request) -> web.Response:
        per_s = float(request.query["events_per_s"])
        n = int(request.query["n"])

        async def run() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(n):
                delay = start + i / per_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                publish(i)
                if mode == "naive":
                    await pending.pop()

        state["task"] = asyncio.get_running_loop().create_task(run())
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

    asyncio.run(main())


# -- clients -----------------------------------------------------------------------------
_SUBSCRIBE = orjson.dumps({"op": "subscribe", "id": "s", "pattern": "bench.>"})


def client_frame(payload: bytes) -> bytes:
    """A masked text frame with an all-zero mask (payload unchanged)."""
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    return head + b"\0\0\0\0" + payload


class Conn(asyncio.Protocol):
    """A minimal WebSocket client: handshake, then unmasked server frames."""

    def __init__(self, stats: Stats, subscribe: bool) -> None:
        self.stats = stats
        self.subscribe = subscribe
        self.buf = bytearray()
        self.open = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.events = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        host = self.stats.host
        transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
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
            opcode = buf[pos] & 0x0F
            if opcode in (1, 2):
                self.on_message(bytes(buf[start:end]))
            pos = end
        if pos:
            del buf[:pos]

    def on_message(self, payload: bytes) -> None:
        if payload.startswith(b'{"op"'):
            if b'"subscribed"' in payload and not self.ready.done():
                self.ready.set_result(None)
            return
        stats = self.stats
        k = payload.count(b'"specversion"')
        self.events += k
        stats.received += k
        if stats.measuring:
            now = time.monotonic()
            value = orjson.loads(payload)
            for e in value if isinstance(value, list) else (value,):
                stats.latencies.append(now - e["data"]["t"])
        if stats.received >= stats.expect and stats.done is not None and not stats.done.done():
            stats.done.set_result(None)


class Stats:
    def __init__(self, host: str) -> None:
        self.host = host
        self.received = 0
        self.expect = 1 << 62
        self.done: asyncio.Future[None] | None = None
        self.measuring = False
        self.latencies: list[float] = []


def run_clients(port: int, count: int, subscribe: bool) -> None:
    raise_nofile()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stats = Stats(f"127.0.0.1:{port}")
        conns: list[Conn] = []
        for i in range(0, count, 100):
            batch = []
            for _ in range(min(100, count - i)):
                _, proto = await loop.create_connection(
                    lambda: Conn(stats, subscribe), "127.0.0.1", port
                )
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
                await stats.done
                print("DONE", flush=True)
            elif cmd == "measure":
                stats.latencies.clear()
                stats.measuring = True
                print("OK", flush=True)
            elif cmd == "report":
                stats.measuring = False
                lat = sorted(stats.latencies)
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

    def send(self, text: str) -> str:
        assert self.p.stdin is not None
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()
        return self.line()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.p.kill()
        self.p.wait()


def measure(mode: str, args: argparse.Namespace) -> dict[str, float]:
    import urllib.request

    server = Proc(["--role", "server", "--mode", mode])
    clients = None
    try:
        port = int(server.line())
        base = f"http://127.0.0.1:{port}"

        def call(path: str, method: str = "POST") -> str:
            req = urllib.request.Request(base + path, method=method)
            with urllib.request.urlopen(req, timeout=300) as r:
                return str(r.read().decode())

        sub = ["--subscribe"] if mode == "rxstreams" else []
        clients = Proc(
            ["--role", "clients", "--port", str(port), "--count", str(args.clients), *sub]
        )
        assert clients.line() == "READY"
        per_burst = args.burst * args.clients
        costs = []
        for _ in range(args.bursts):
            assert clients.p.stdin is not None
            clients.p.stdin.write(f"expect {per_burst}\n")
            clients.p.stdin.flush()
            cpu0 = float(call("/bench/cpu", "GET"))
            call(f"/bench/burst?n={args.burst}")
            assert clients.line() == "DONE"
            cpu1 = float(call("/bench/cpu", "GET"))
            costs.append((cpu1 - cpu0) * 1e6 / per_burst)
            time.sleep(0.2)
        events_per_s = args.rate / args.clients
        n_events = int(events_per_s * args.seconds)
        assert clients.send("measure") == "OK"
        assert clients.p.stdin is not None
        clients.p.stdin.write(f"expect {n_events * args.clients}\n")
        clients.p.stdin.flush()
        call(f"/bench/paced?events_per_s={events_per_s}&n={n_events}")
        call("/bench/wait")
        assert clients.line() == "DONE"
        lat = json.loads(clients.send("report"))
        return {"us": statistics.median(costs), "p50": lat["p50"], "p99": lat["p99"]}
    finally:
        if clients is not None:
            clients.stop()
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=100, help="events per burst")
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--rate", type=float, default=20_000, help="deliveries per second (paced)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--role", default="orchestrator", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="rxstreams", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--subscribe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.environ.get("FANOUT_DEBUG"):
        faulthandler.dump_traceback_later(float(os.environ["FANOUT_DEBUG"]), exit=True)
    if args.role == "server":
        run_server(args.mode)
        return
    if args.role == "clients":
        run_clients(args.port, args.count, args.subscribe)
        return
    ours = measure("rxstreams", args)
    naive = measure("naive", args)
    print(
        json.dumps(
            {
                "clients": args.clients,
                "rxstreams_us_per_delivery": round(ours["us"], 3),
                "naive_us_per_delivery": round(naive["us"], 3),
                "cost_ratio": round(naive["us"] / ours["us"], 2),
                "rxstreams_p50_ms": round(ours["p50"], 3),
                "naive_p50_ms": round(naive["p50"], 3),
                "rxstreams_p99_ms": round(ours["p99"], 3),
                "naive_p99_ms": round(naive["p99"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()

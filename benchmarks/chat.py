"""The chat: rxstreams' demo against a minimal idiomatic python-socketio chat, same run.

Prints one JSON line per configuration of the demo. Each server runs in its own process
(its CPU time read with ``time.process_time``), with a client process holding
``--clients`` WebSocket connections, all in one room. Senders among them (one message
every two seconds each, within the demo's per-user flood control) send ``--rate``
messages per second in total for ``--seconds``; every message goes to every member of
the room, the sender included. Measured: server CPU per delivery, publish-to-receive
latency p50/p99 over every delivery, and messages lost. Sides alternate, ``--reps``
times; figures are medians.

- rxstreams: ``create_demo_app`` (the demo's pipeline: flood control, then
  ``batch_by_key(room, within=Rules.batch_within)``), clients publish to ``chat.lobby.in``
  and subscribe to ``room.lobby.msg`` over the rxstreams WebSocket protocol;
  ``--batch-within`` overrides the demo's 50 ms. The demo batches leading-edge (the
  first message of a quiet room goes out at once); the second line patches its
  ``batch_by_key`` to trailing batching (every message waits up to the window), as the
  demo was before, for comparison.
- python-socketio: ``AsyncServer(async_mode="aiohttp")``, websocket transport, every
  client ``enter_room("lobby")`` on connect, ``emit("message", data, room="lobby")``
  for each message received.

    python benchmarks/chat.py --clients 200 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
# benchmarks/operators.py would shadow the operators package the demo imports
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
ROOM = "lobby"


# -- servers -----------------------------------------------------------------------------
def run_server(mode: str, batch_within: float, trailing: bool, loop: str) -> None:
    from aiohttp import web

    from adapters.server.loop import run

    if mode == "rxstreams":
        from adapters.demo.app import create_demo_app
        from adapters.demo.pipeline import Rules
        from adapters.server import ServerConfig
        from streams import MemoryBroker, Retention

        broker = MemoryBroker(Retention(max_events=100_000, max_per_subject=200))
        cfg = ServerConfig(
            max_connections=100_000, ws_ping=None, publish_rate=20_000, publish_burst=20_000
        )
        rules = Rules() if batch_within <= 0 else Rules(batch_within=batch_within)
        if trailing:  # the demo as it was before leading-edge batching, for comparison
            import adapters.demo.pipeline as pipeline
            from operators import batch_by_key

            def trailing_batch_by_key(*args: Any, **kwargs: Any) -> Any:
                return batch_by_key(*args, **{**kwargs, "leading": False})

            pipeline.batch_by_key = trailing_batch_by_key
        kwargs: dict[str, Any] = {"rules": rules, "config": cfg}
        if "tokens" in inspect.signature(create_demo_app).parameters:
            kwargs["tokens"] = False
        app = create_demo_app(broker, **kwargs)
    else:
        import socketio

        sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
        app = web.Application()
        sio.attach(app)

        @sio.event
        async def connect(sid: str, environ: Any) -> None:
            await sio.enter_room(sid, ROOM)

        @sio.event
        async def message(sid: str, data: Any) -> None:
            await sio.emit("message", data, room=ROOM)

    async def cpu(request: web.Request) -> web.Response:
        return web.Response(text=repr(time.process_time()))

    app.router.add_get("/bench/cpu", cpu)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    run(main(), loop)


# -- clients -----------------------------------------------------------------------------
def frame(payload: bytes) -> bytes:
    """A masked client text frame with an all-zero mask (payload unchanged)."""
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    return head + b"\0\0\0\0" + payload


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.latencies: list[float] = []
        self.measuring = False

    def got(self, t: float) -> None:
        self.received += 1
        if self.measuring:
            self.latencies.append(time.monotonic() - t)


class Conn(asyncio.Protocol):
    """A raw WebSocket client speaking either rxstreams' protocol or Socket.IO v5."""

    def __init__(self, stats: Stats, mode: str, host: str, user: str) -> None:
        self.stats = stats
        self.mode = mode
        self.host = host
        self.user = user
        self.buf = bytearray()
        self.open = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        path = "/ws" if self.mode == "rxstreams" else "/socket.io/?EIO=4&transport=websocket"
        transport.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def send(self, text: str) -> None:
        data = {"user": self.user, "text": text}
        if self.mode == "rxstreams":
            op = {"op": "publish", "subject": f"chat.{ROOM}.in", "type": "chat.message"}
            payload = orjson.dumps({**op, "data": data})
        else:
            payload = b"42" + orjson.dumps(["message", data])
        self.transport.write(frame(payload))

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
            if self.mode == "rxstreams":
                sub = {"op": "subscribe", "id": "r", "pattern": f"room.{ROOM}.msg"}
                self.transport.write(frame(orjson.dumps(sub)))
        pos, n = 0, len(buf)
        while n - pos >= 2:
            size = buf[pos + 1] & 0x7F
            start = pos + 2
            if size == 126:
                if n - pos < 4:
                    break
                size, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            end = start + size
            if end > n:
                break
            if buf[pos] & 0x0F == 1:
                self.on_message(bytes(buf[start:end]))
            pos = end
        if pos:
            del buf[:pos]

    def on_message(self, payload: bytes) -> None:
        if self.mode == "rxstreams":
            if payload.startswith(b'{"op"'):
                if b'"subscribed"' in payload and not self.ready.done():
                    self.ready.set_result(None)
                return
            value = orjson.loads(payload)
            for e in value if isinstance(value, list) else (value,):
                self.stats.got(float(e["data"]["text"].split()[0]))
            return
        kind = payload[:1]
        if kind == b"2":  # engine.io ping
            self.transport.write(frame(b"3"))
        elif payload.startswith(b"0"):  # engine.io open: connect the default namespace
            self.transport.write(frame(b"40"))
        elif payload.startswith(b"40"):
            if not self.ready.done():
                self.ready.set_result(None)
        elif payload.startswith(b"42"):
            _, data = orjson.loads(payload[2:])
            self.stats.got(float(data["text"].split()[0]))


def run_clients(port: int, count: int, mode: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stats = Stats()
        conns: list[Conn] = []
        host = f"127.0.0.1:{port}"
        for i in range(0, count, 50):
            batch = []
            for j in range(i, min(count, i + 50)):
                _, proto = await loop.create_connection(
                    lambda j=j: Conn(stats, mode, host, f"u{j}"), "127.0.0.1", port
                )
                batch.append(proto)
            await asyncio.gather(*(c.ready for c in batch))
            conns.extend(batch)
        await asyncio.sleep(0.5)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print("READY", flush=True)
        seq = 0
        while line := (await reader.readline()).decode().split():
            rate, seconds = float(line[1]), float(line[2])
            senders = conns[: max(1, min(len(conns), int(rate * 2)))]  # each every 2 s
            n = int(rate * seconds)
            stats.received = 0
            stats.latencies.clear()
            stats.measuring = True
            start = loop.time()
            for i in range(n):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                seq += 1
                senders[i % len(senders)].send(f"{time.monotonic():.6f} m{seq}")
            expect = n * len(conns)
            deadline = loop.time() + 10
            while stats.received < expect and loop.time() < deadline:
                await asyncio.sleep(0.05)
            stats.measuring = False
            lat = sorted(stats.latencies) or [0.0]
            p50, p99 = (lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 for q in (0.5, 0.99))
            lost = expect - stats.received
            print(json.dumps({"deliveries": stats.received, "lost": lost, "p50": p50, "p99": p99}))
            sys.stdout.flush()

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


class Side:
    def __init__(
        self, mode: str, args: argparse.Namespace, batch_within: float, trailing: bool = False
    ) -> None:
        self.server = Proc(
            [
                "--role=server",
                f"--mode={mode}",
                f"--batch-within={batch_within}",
                f"--loop={args.loop}",
                *(["--trailing"] if trailing else []),
            ]
        )
        self.port = int(self.server.line())
        self.clients = Proc(
            ["--role=clients", f"--port={self.port}", f"--count={args.clients}", f"--mode={mode}"]
        )
        assert self.clients.line() == "READY"

    def cpu(self) -> float:
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/bench/cpu"
        with urllib.request.urlopen(url, timeout=60) as r:
            return float(r.read().decode())

    def measure(self, rate: float, seconds: float) -> dict[str, float]:
        cpu0 = self.cpu()
        r = json.loads(self.clients.send(f"run {rate} {seconds}"))
        cpu = self.cpu() - cpu0
        r["us"] = cpu * 1e6 / max(1, r["deliveries"])
        return dict(r)

    def stop(self) -> None:
        self.clients.stop()
        self.server.stop()


def compare(args: argparse.Namespace, batch_within: float, trailing: bool) -> dict[str, Any]:
    sides = {
        "rxstreams": Side("rxstreams", args, batch_within, trailing),
        "socketio": Side("socketio", args, 0),
    }
    results: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
    try:
        for rep in range(args.reps):
            names = list(sides) if rep % 2 == 0 else list(sides)[::-1]
            for name in names:
                results[name].append(sides[name].measure(args.rate, args.seconds))
                time.sleep(0.5)
    finally:
        for side in sides.values():
            side.stop()

    def med(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in results[name]), 3)

    return {
        "clients": args.clients,
        "messages_per_s": args.rate,
        "seconds": args.seconds,
        "reps": args.reps,
        "loop": args.loop,
        "demo_batch_within_ms": (batch_within if batch_within > 0 else 0.05) * 1000,
        "demo_batching": "trailing" if trailing else "as shipped (leading-edge)",
        "rxstreams_us_per_delivery": med("rxstreams", "us"),
        "socketio_us_per_delivery": med("socketio", "us"),
        "cpu_ratio": round(med("rxstreams", "us") / med("socketio", "us"), 3),
        "rxstreams_p50_ms": med("rxstreams", "p50"),
        "socketio_p50_ms": med("socketio", "p50"),
        "rxstreams_p99_ms": med("rxstreams", "p99"),
        "socketio_p99_ms": med("socketio", "p99"),
        "rxstreams_lost": sum(int(r["lost"]) for r in results["rxstreams"]),
        "socketio_lost": sum(int(r["lost"]) for r in results["socketio"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20.0, help="messages per second, in total")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-within", type=float, default=0.0, help="demo batch window, s")
    ap.add_argument("--trailing", action="store_true", help="only the trailing-batch line")
    ap.add_argument("--shipped", action="store_true", help="only the demo as shipped")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--role", default="orchestrator", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="rxstreams", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "server":
        run_server(args.mode, args.batch_within, args.trailing, args.loop)
        return
    if args.role == "clients":
        run_clients(args.port, args.count, args.mode)
        return
    lines = [True] if args.trailing else [False] if args.shipped else [False, True]
    for trailing in lines:
        print(json.dumps(compare(args, args.batch_within, trailing)), flush=True)


if __name__ == "__main__":
    main()

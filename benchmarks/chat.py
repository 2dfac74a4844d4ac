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
import inspect
import json
import os
import statistics
import sys
import time
from typing import Any

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
# benchmarks/operators.py would shadow the operators package the demo imports
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.append(HERE)  # after the packages: only _harness is found here

from _harness import (  # noqa: E402
    Proc,
    add_cpu_route,
    client_frame,
    handshake,
    percentiles,
    serve_forever,
    stdin_lines,
    take_messages,
    take_upgrade,
)

ROOM = "lobby"


# -- servers -----------------------------------------------------------------------------
def demo_batch_within(batch_within: float) -> float:
    """The demo's batch window: ``batch_within`` if set (> 0), else the shipped default."""
    from adapters.demo.pipeline import Rules

    return batch_within if batch_within > 0 else Rules().batch_within


def rxstreams_app(batch_within: float, trailing: bool) -> Any:
    """The demo as shipped (``create_demo_app``), ``trailing`` patching its batching back
    to trailing windows, as the demo was before leading-edge batching."""
    from adapters.demo.app import create_demo_app
    from adapters.demo.pipeline import Rules
    from adapters.server import ServerConfig
    from streams import MemoryBroker, Retention

    broker = MemoryBroker(Retention(max_events=100_000, max_per_subject=200))
    cfg = ServerConfig(
        max_connections=100_000, ws_ping=None, publish_rate=20_000, publish_burst=20_000
    )
    rules = Rules(batch_within=demo_batch_within(batch_within))
    if trailing:
        import adapters.demo.pipeline as pipeline
        from operators import batch_by_key

        def trailing_batch_by_key(*args: Any, **kwargs: Any) -> Any:
            return batch_by_key(*args, **{**kwargs, "leading": False})

        pipeline.batch_by_key = trailing_batch_by_key
    kwargs: dict[str, Any] = {"rules": rules, "config": cfg}
    if "tokens" in inspect.signature(create_demo_app).parameters:
        kwargs["tokens"] = False
    return create_demo_app(broker, **kwargs)


def socketio_app() -> Any:
    """A minimal idiomatic python-socketio chat: one room, every message to everyone."""
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)

    @sio.event
    async def connect(sid: str, environ: Any) -> None:
        await sio.enter_room(sid, ROOM)

    @sio.event
    async def message(sid: str, data: Any) -> None:
        await sio.emit("message", data, room=ROOM)

    return app


def run_server(mode: str, batch_within: float, trailing: bool, loop: str) -> None:
    app = rxstreams_app(batch_within, trailing) if mode == "rxstreams" else socketio_app()
    add_cpu_route(app, profile=mode == "rxstreams")
    serve_forever(app, loop)


# -- clients -----------------------------------------------------------------------------
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
        transport.write(handshake(path, self.host))

    def send(self, text: str) -> None:
        data = {"user": self.user, "text": text}
        if self.mode == "rxstreams":
            op = {"op": "publish", "subject": f"chat.{ROOM}.in", "type": "chat.message"}
            payload = orjson.dumps({**op, "data": data})
        else:
            payload = b"42" + orjson.dumps(["message", data])
        self.transport.write(client_frame(payload))

    def _upgraded(self) -> bool:
        try:
            if not take_upgrade(self.buf):
                return False
        except RuntimeError as exc:
            self.ready.set_exception(exc)
            return False
        self.open = True
        if self.mode == "rxstreams":
            sub = {"op": "subscribe", "id": "r", "pattern": f"room.{ROOM}.msg"}
            self.transport.write(client_frame(orjson.dumps(sub)))
        return True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open and not self._upgraded():
            return
        on_message = self.on_rxstreams if self.mode == "rxstreams" else self.on_socketio
        for payload in take_messages(self.buf):
            on_message(payload)

    def on_rxstreams(self, payload: bytes) -> None:
        if payload.startswith(b'{"op"'):
            if b'"subscribed"' in payload and not self.ready.done():
                self.ready.set_result(None)
            return
        value = orjson.loads(payload)
        for e in value if isinstance(value, list) else (value,):
            self.stats.got(float(e["data"]["text"].split()[0]))

    def on_socketio(self, payload: bytes) -> None:
        kind = payload[:1]
        if kind == b"2":  # engine.io ping
            self.transport.write(client_frame(b"3"))
        elif payload.startswith(b"0"):  # engine.io open: connect the default namespace
            self.transport.write(client_frame(b"40"))
        elif payload.startswith(b"40"):
            if not self.ready.done():
                self.ready.set_result(None)
        elif payload.startswith(b"42"):
            _, data = orjson.loads(payload[2:])
            self.stats.got(float(data["text"].split()[0]))


async def connect_all(port: int, count: int, mode: str, stats: Stats) -> list[Conn]:
    """``count`` connections, opened 50 at a time, each in the room and ready."""
    loop = asyncio.get_running_loop()
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
    return conns


async def chat_for(conns: list[Conn], stats: Stats, rate: float, seconds: float) -> dict[str, Any]:
    """Senders (each once every two seconds) send ``rate`` messages per second for
    ``seconds``; then wait (up to 10 s) for every delivery. Latency percentiles, losses."""
    loop = asyncio.get_running_loop()
    senders = conns[: max(1, min(len(conns), int(rate * 2)))]
    n = int(rate * seconds)
    stats.received = 0
    stats.latencies.clear()
    stats.measuring = True
    start = loop.time()
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        senders[i % len(senders)].send(f"{time.monotonic():.6f} m{i}")
    expect = n * len(conns)
    deadline = loop.time() + 10
    while stats.received < expect and loop.time() < deadline:
        await asyncio.sleep(0.05)
    stats.measuring = False
    p50, p99 = percentiles(stats.latencies)
    return {"deliveries": stats.received, "lost": expect - stats.received, "p50": p50, "p99": p99}


def run_clients(port: int, count: int, mode: str) -> None:
    """The client process: ``run RATE SECONDS`` answers one JSON line of results."""

    async def main() -> None:
        stats = Stats()
        conns = await connect_all(port, count, mode, stats)
        await asyncio.sleep(0.5)
        reader = await stdin_lines()
        print("READY", flush=True)
        while line := (await reader.readline()).decode().split():
            result = await chat_for(conns, stats, float(line[1]), float(line[2]))
            print(json.dumps(result), flush=True)

    asyncio.run(main())


# -- orchestrator ------------------------------------------------------------------------
class Side:
    def __init__(
        self, mode: str, args: argparse.Namespace, batch_within: float, trailing: bool = False
    ) -> None:
        self.server = Proc(
            __file__,
            [
                "--role=server",
                f"--mode={mode}",
                f"--batch-within={batch_within}",
                f"--loop={args.loop}",
                *(["--trailing"] if trailing else []),
            ],
        )
        self.port = int(self.server.line())
        self.clients = Proc(
            __file__,
            ["--role=clients", f"--port={self.port}", f"--count={args.clients}", f"--mode={mode}"],
        )
        assert self.clients.line() == "READY"

    def cpu(self) -> float:
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/bench/cpu"
        with urllib.request.urlopen(url, timeout=60) as r:
            return float(r.read().decode())

    def measure(self, rate: float, seconds: float) -> dict[str, float]:
        _, sys0 = self.server.cpu_split()
        cpu0 = self.cpu()
        r = json.loads(self.clients.send(f"run {rate} {seconds}"))
        cpu = self.cpu() - cpu0
        _, sys1 = self.server.cpu_split()
        deliveries = max(1, r["deliveries"])
        r["us"] = cpu * 1e6 / deliveries
        r["sys_us"] = (sys1 - sys0) * 1e6 / deliveries
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
        "demo_batch_within_ms": demo_batch_within(batch_within) * 1000,
        "demo_batching": "trailing" if trailing else "as shipped (leading-edge)",
        "rxstreams_us_per_delivery": med("rxstreams", "us"),
        "socketio_us_per_delivery": med("socketio", "us"),
        "cpu_ratio": round(med("rxstreams", "us") / med("socketio", "us"), 3),
        "rxstreams_kernel_us": med("rxstreams", "sys_us"),
        "socketio_kernel_us": med("socketio", "sys_us"),
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

"""What the server benchmarks share: subprocesses driven over pipes, CPU readings, latency
percentiles, a minimal WebSocket client's framing, and the benchmark server's main.

``fanout.py``, ``chat.py`` and ``connections.py`` each run a server and a client process
(the same script with ``--role``); the orchestrator drives them line by line over their
stdin/stdout. A server's CPU is read from inside (``time.process_time`` through
``GET /bench/cpu``, see :func:`add_cpu_route`) and split into user and kernel time from
``/proc`` (:meth:`Proc.cpu_split`): the kernel's share is mostly the socket writes, the
floor every server pays per delivery.

``BENCH_PROFILE=/path`` makes the rxstreams server's ``/bench/cpu`` toggle cProfile, so
the profile covers exactly the measured region (read it with ``pstats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
_TICK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> None:
    """Raise the open-files soft limit to the hard one (thousands of sockets)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def percentiles(values: Sequence[float], qs: Sequence[float] = (0.5, 0.99)) -> list[float]:
    """Nearest-rank percentiles of ``values`` (seconds) in milliseconds; 0 when empty.

    >>> percentiles([0.001, 0.002, 0.003, 0.004])
    [3.0, 4.0]
    """
    ordered = sorted(values) or [0.0]
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 for q in qs]


def client_frame(payload: bytes) -> bytes:
    """A masked client text frame with an all-zero mask (the payload stays as it is).

    >>> client_frame(b"hi")
    b'\\x81\\x82\\x00\\x00\\x00\\x00hi'
    """
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    return head + b"\0\0\0\0" + payload


def _frame_at(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """Where the payload of the frame at ``pos`` starts and ends; None if incomplete."""
    n = len(buf)
    if n - pos < 2:
        return None
    size = buf[pos + 1] & 0x7F
    start = pos + 2
    if size == 126:
        size, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
    elif size == 127:
        size, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
    end = start + size
    return (start, end) if end <= n else None


def take_messages(buf: bytearray) -> list[bytes]:
    """Cut the complete unmasked server frames off ``buf``; the text and binary payloads.

    >>> buf = bytearray(b"\\x81\\x02hi\\x81\\x05hel")
    >>> take_messages(buf), bytes(buf)
    ([b'hi'], b'\\x81\\x05hel')
    """
    out: list[bytes] = []
    pos = 0
    while (span := _frame_at(buf, pos)) is not None:
        start, end = span
        if buf[pos] & 0x0F in (1, 2):
            out.append(bytes(buf[start:end]))
        pos = end
    if pos:
        del buf[:pos]
    return out


def take_upgrade(buf: bytearray) -> bool | None:
    """Consume the server's ``101`` response from ``buf``: True once upgraded, None while
    it is incomplete; raises with the response's start when the server refused."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    if not buf.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(bytes(buf[:200]).decode())
    del buf[: end + 4]
    return True


def handshake(path: str, host: str) -> bytes:
    """A WebSocket upgrade request."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def add_cpu_route(app: Any, profile: bool) -> None:
    """``GET /bench/cpu``: the server's ``process_time``. With ``profile`` and
    ``$BENCH_PROFILE`` set, each call toggles cProfile (dumped to that path)."""
    from aiohttp import web

    path = os.environ.get("BENCH_PROFILE") if profile else None
    prof: Any = None
    if path:
        import cProfile

        prof = cProfile.Profile()
    on = [False]

    async def cpu(request: web.Request) -> web.Response:
        if prof is not None:
            if on[0]:
                prof.disable()
                prof.dump_stats(path)
            else:
                prof.enable()
            on[0] = not on[0]
        return web.Response(text=repr(time.process_time()))

    app.router.add_get("/bench/cpu", cpu)


def serve_forever(app: Any, loop: str) -> None:
    """Serve ``app`` on an ephemeral port (printed on stdout) on ``loop``, until killed."""
    from aiohttp import web

    from adapters.server.loop import run

    raise_nofile()

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    run(main(), loop)


async def stdin_lines() -> asyncio.StreamReader:
    """The process's stdin as a stream of command lines from the orchestrator."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


class Proc:
    """``script`` run as a subprocess, spoken to one line at a time."""

    def __init__(self, script: str, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE)}
        self.p = subprocess.Popen(
            [sys.executable, os.path.abspath(script), *args],
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

    def cpu_split(self) -> tuple[float, float]:
        """User and kernel CPU seconds so far (``/proc``, clock-tick resolution)."""
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / _TICK, int(fields[12]) / _TICK

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.p.kill()
        self.p.wait()

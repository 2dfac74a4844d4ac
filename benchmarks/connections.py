"""Memory per idle WebSocket connection: rxstreams' server against a bare aiohttp one.

Prints one JSON line. For each server (a subprocess, file-descriptor soft limit raised),
a client process opens ``--clients`` WebSocket connections (each rxstreams client also
subscribes to a pattern) and holds them idle; the server's resident set size growth
(``VmRSS`` from /proc) divided by the connections is the cost of one connection.

    python benchmarks/connections.py --clients 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import HERE, Proc, raise_nofile

FANOUT = os.path.join(HERE, "fanout.py")  # its servers and clients serve here too


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure(mode: str, clients: int) -> float:
    server = Proc(FANOUT, ["--role=server", f"--mode={mode}", "--transport=ws", "--loop=asyncio"])
    conns = None
    try:
        port = int(server.line())
        time.sleep(0.5)
        before = rss_kib(server.p.pid)
        conns = Proc(
            FANOUT,
            [
                "--role=clients",
                f"--port={port}",
                f"--count={clients}",
                f"--mode={mode}",
                "--transport=ws",
            ],
        )
        assert conns.line() == "READY"
        time.sleep(1.0)
        after = rss_kib(server.p.pid)
        return (after - before) / clients
    finally:
        if conns is not None:
            conns.stop()
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=10_000)
    args = ap.parse_args()
    raise_nofile()
    ours = measure("rxstreams", args.clients)
    bare = measure("naive", args.clients)
    print(
        json.dumps(
            {
                "clients": args.clients,
                "kib_per_connection": round(ours, 2),
                "bare_aiohttp_kib_per_connection": round(bare, 2),
                "ratio": round(ours / bare, 2) if bare > 0 else None,
            }
        )
    )


if __name__ == "__main__":
    main()

"""``rxstreams serve`` in a subprocess: SIGTERM shuts down gracefully (WebSockets get 1001,
queued events are flushed); the CLI's lazy subcommands and factory resolution."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.cli import CliError, app_for, build_parser, main
from streams import MemoryBroker, from_iterable

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_flushes_and_closes_websockets_with_1001(sig: signal.Signals) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli",
        "serve",
        "streams:MemoryBroker",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode()
        url = line.rsplit(" ", 1)[1].strip()
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url.replace("http", "ws") + "/ws") as ws,
        ):
            await ws.send_json({"op": "subscribe", "id": "s", "pattern": "x"})
            assert orjson.loads(await ws.receive_str())["op"] == "subscribed"
            async with session.post(url + "/events/x", json=[1, 2, 3]) as r:
                assert r.status == 202
            proc.send_signal(sig)
            got = []
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                value = orjson.loads(msg.data)
                got.extend(value if isinstance(value, list) else [value])
            assert [e["data"] for e in got] == [1, 2, 3]
            assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_parser_defines_client_and_worker_arguments() -> None:
    p = build_parser()
    t = p.parse_args(["tail", "http://h:1", "--format", "ndjson", "--since", "e-1"])
    assert (t.url, t.format, t.since) == ("http://h:1", "ndjson", "e-1")
    pub = p.parse_args(["publish", "a.b", "--to", "http://h:1", "--data", "1", "--type", "t"])
    assert (pub.subject, pub.to, pub.data, pub.file, pub.type) == (
        "a.b",
        "http://h:1",
        "1",
        None,
        "t",
    )
    w = p.parse_args(["worker", "m:p", "--broker", "nats://x", "--group", "g"])
    assert (w.target, w.broker, w.group) == ("m:p", "nats://x", "g")
    with pytest.raises(SystemExit):
        p.parse_args(["publish", "a", "--to", "u", "--file", "f", "--data", "1"])


def test_factory_results_become_apps() -> None:
    broker = MemoryBroker()
    app = web.Application()
    assert app_for(app, None, None) is app
    assert isinstance(app_for(broker, None, None), web.Application)
    assert isinstance(app_for(from_iterable([1]), None, "s"), web.Application)
    with pytest.raises(CliError, match="expected an aiohttp Application"):
        app_for(42, None, None)
    assert main(["serve", "nocolon"]) == 2


async def test_demo_subcommand_serves() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli",
        "demo",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        url = ""
        while not url:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "demo exited"
            if "http://" in line:
                url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # the announcement may precede the listening socket
                try:
                    async with session.get(url + "/healthz") as r:
                        assert r.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("demo never answered /healthz")
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def run_cli(*argv: str) -> tuple[int, str]:
    """``rxstreams ARGV`` in a subprocess: its exit status and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli",
        *argv,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_cli_errors_are_one_line_with_exit_status_2_or_1() -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = str(busy.getsockname()[1])
    cases = [
        (["serve", "--port", "99999"], 2, "99999 is not a port"),
        (["demo", "--port", "-1"], 2, "-1 is not a port"),
        (["demo", "--rate", "5"], 2, "unrecognized arguments: --rate"),
        (["serve", "nosuch:make"], 2, "cannot import 'nosuch'"),
        (["serve", "streams:MemoryBroker", "--broker", "nats://127.0.0.1:4222"], 2, "--broker"),
        (["serve", "--broker", "bogus://x"], 2, "unsupported broker URL"),
        (["worker", "nosuch:x", "--broker", "nats://127.0.0.1:4222"], 2, "'nosuch:x'"),
        (["worker", "builtins:len", "--broker", "bogus://x"], 2, "unsupported broker URL"),
        (
            ["serve", "streams:MemoryBroker", "--port", port],
            1,
            f"cannot listen on 127.0.0.1:{port}",
        ),
        (["demo", "--port", port], 1, "address already in use"),
    ]
    try:
        results = await asyncio.gather(*(run_cli(*argv) for argv, _, _ in cases))
    finally:
        busy.close()
    for (argv, status, text), (code, err) in zip(cases, results, strict=True):
        lines = [line for line in err.splitlines() if line.startswith("rxstreams")]
        assert (code, len(lines)) == (status, 1), (argv, err)
        assert text in lines[0] and "Traceback" not in err, (argv, err)

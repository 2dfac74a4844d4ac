"""``rxstreams tail`` stops on its own signals and says what its connection does;
``rxstreams publish`` shows rate, ETA and throttling on a terminal; the help is complete.

Real subprocesses, real sockets, a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adapters.cli import build_parser
from adapters.client import publish
from adapters.server import ServerConfig
from streams import MemoryBroker, Retention

from .live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
TAIL = [sys.executable, "-m", "adapters.cli", "tail"]


def ignore_sigint() -> None:
    """What ``cmd &`` in a non-interactive shell, nohup and some CI runners do."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def start_tail(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *TAIL,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=ignore_sigint,
    )


async def read_until(stream: asyncio.StreamReader, needle: str, timeout: float = 20) -> str:
    """stderr lines up to and including the first one containing ``needle``."""
    seen = ""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            line = (await stream.readline()).decode()
            assert line, f"stream ended before {needle!r}; got {seen!r}"
            seen += line
    return seen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_tail_stops_on_sigint_and_sigterm_even_when_started_with_sigint_ignored(
    sig: signal.Signals, server: LiveServer
) -> None:
    proc = await start_tail(f"{server.http}/events/a.%3E")
    assert proc.stderr is not None
    try:
        await read_until(proc.stderr, "connected")
        proc.send_signal(sig)
        rc = await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0


async def test_tail_says_connecting_retrying_and_resumed_on_stderr() -> None:
    server = LiveServer(MemoryBroker(Retention(max_per_subject=None)))
    server.port = free_port()  # nothing listens there yet
    proc = await start_tail(f"{server.http}/events/a.%3E")
    assert proc.stderr is not None and proc.stdout is not None
    try:
        said = await read_until(proc.stderr, "retrying in")
        assert f"rxstreams tail: connecting to {server.http}/events/a.%3E" in said
        refused = rf"cannot connect to 127.0.0.1:{server.port} \(Connection refused\)"
        expected = rf"rxstreams tail: {refused}; retrying in \d+\.\d s"
        assert re.search(expected, said), said
        await server.start()  # the dead URL comes alive: the next attempt connects
        await read_until(proc.stderr, "rxstreams tail: connected")
        (pos,) = await publish(server.http, "a.b", {"n": 1})
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert orjson.loads(line)["sequence"] == str(pos)
        await server.restart()  # dropped: it retries, then resumes after the last event
        said = await read_until(proc.stderr, "resumed at")
        assert f"rxstreams tail: resumed at {pos}" in said
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server.stop()


async def test_tail_quiet_says_nothing_about_the_connection(server: LiveServer) -> None:
    (start,) = await publish(server.http, "a.b", {"n": 0})
    proc = await start_tail(f"{server.http}/events/a.%3E", "--quiet", "--since", str(start))
    assert proc.stdout is not None and proc.stderr is not None
    try:
        await publish(server.http, "a.b", {"n": 1})
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert orjson.loads(line)["data"] == {"n": 1}
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (await proc.stderr.read()) == b""


async def test_publish_progress_on_a_terminal_shows_rate_eta_and_throttling(
    tmp_path: Path,
) -> None:
    # a tight limit, so the upload is throttled and the bar says so
    server = LiveServer(MemoryBroker(), ServerConfig(publish_rate=2000, publish_burst=500))
    await server.start()
    path = tmp_path / "big.ndjson"
    path.write_bytes(b"".join(orjson.dumps({"n": i, "pad": "x" * 40}) + b"\n" for i in range(6000)))
    leader, follower = pty.openpty()
    try:
        argv = [sys.executable, "-m", "adapters.cli", "publish", "s.x", "--to", server.http]
        argv += ["--file", str(path), "--chunk-lines", "500"]
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=follower
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
        await server.stop()
    err = b"".join(chunks).decode()
    assert proc.returncode == 0, err
    assert orjson.loads(out)["count"] == 6000
    frames = [f for f in err.replace("\r\n", "\n").split("\r") if f.strip()]
    assert any(re.search(r"\d+ ev/s  ETA \d+:\d\d", f) for f in frames), frames
    assert any("throttled by the server: retrying in" in f for f in frames), frames
    assert re.search(r"100%  6000 events .* ev/s  in \d+:\d\d", err), err
    assert "the server throttled this upload" in err and "--publish-rate" in err


def test_every_option_has_help_and_shows_its_default() -> None:
    parser = build_parser()
    assert re.fullmatch(r"rxstreams \S+\n", subprocess_output("--version"))
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        text = sub.format_help()
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            has_default = action.default not in (None, False, "==SUPPRESS==")
            if action.option_strings and has_default and action.nargs != 0:
                assert f"(default: {action.default})" in text, (name, action.dest)
    publish_help = commands["publish"].format_help()
    assert ".json" in publish_help and "NDJSON" in publish_help
    assert "(default: 3)" in commands["demo"].format_help()  # --bots


def subprocess_output(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

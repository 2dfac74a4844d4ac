"""``rxstreams tail`` and ``rxstreams publish`` as real subprocesses against a real server."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sys
from pathlib import Path

import orjson
import pytest

from adapters.client import publish
from adapters.client.progress import Progress
from streams import Event

from .live import LiveServer

ROOT = Path(__file__).resolve().parents[2]


def command(name: str, **ns: object) -> list[str]:
    """argv running ``rxstreams <name>`` (``python -m adapters.cli``) with these options."""
    argv = [sys.executable, "-m", "adapters.cli", name]
    argv.append(str(ns.pop("url") if name == "tail" else ns.pop("subject")))
    for key, value in ns.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return argv


async def run(argv: list[str], timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("fmt", ["sse", "ndjson", "ws"])
async def test_tail_prints_each_event_as_a_json_line_until_ctrl_c(
    fmt: str, server: LiveServer
) -> None:
    (start,) = await publish(server.http, "chat.lobby.msg", {"n": 0})
    url = server.ws if fmt == "ws" else f"{server.http}/events/chat.>"
    argv = command("tail", url=url, format=fmt, since=str(start), pattern="chat.>")
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        await publish(server.http, "chat.lobby.msg", events=[{"n": 1}, {"n": 2}])
        await publish(server.http, "elsewhere", {"n": -1})
        await publish(server.http, "chat.room.msg", {"n": 3})
        lines = [await asyncio.wait_for(proc.stdout.readline(), 20) for _ in range(3)]
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    events = [Event.decode(line) for line in lines]
    assert [e.data for e in events] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert rc == 0
    assert b"Traceback" not in await proc.stderr.read()


async def test_tail_reports_a_server_error_and_exits_1(server: LiveServer) -> None:
    rc, out, err = await run(command("tail", url=f"{server.http}/events/a..b", format="sse"))
    assert (rc, out) == (1, "")
    assert "bad_subject" in err and "HTTP 400" in err


async def test_tail_rejects_a_bad_since_before_connecting(server: LiveServer) -> None:
    rc, _, err = await run(command("tail", url=f"{server.http}/events/x", since="nope"))
    assert rc == 2
    assert "not a position" in err


async def test_publish_data_prints_the_positions(server: LiveServer) -> None:
    data = '{"text": "hi"}'
    kind = "chat.message"
    argv = command("publish", subject="chat.lobby.msg", to=server.http, data=data, type=kind)
    rc, out, err = await run(argv)
    assert rc == 0, err
    summary = json.loads(out)
    (event,) = server.broker.history(">")
    assert summary == {"subject": "chat.lobby.msg", "count": 1, "positions": [event.sequence]}
    assert (event.data, event.type) == ({"text": "hi"}, "chat.message")


async def test_publish_json_array_file(server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    path.write_bytes(orjson.dumps([{"n": 1}, {"n": 2}, [3]]))
    rc, out, err = await run(command("publish", subject="b.x", to=server.http, file=str(path)))
    assert rc == 0, err
    assert json.loads(out)["count"] == 3
    assert [e.data for e in server.broker.history(">")] == [{"n": 1}, {"n": 2}, [3]]


async def test_publish_ndjson_file_streams_in_chunks(server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(orjson.dumps({"n": i}) + b"\n" for i in range(2500)))
    rc, out, err = await run(command("publish", subject="s.x", to=server.http, file=str(path)))
    assert rc == 0, err
    summary = json.loads(out)
    history = server.broker.history(">")
    assert [e.data["n"] for e in history] == list(range(2500))
    assert summary == {
        "subject": "s.x",
        "count": 2500,
        "first": history[0].sequence,
        "last": history[-1].sequence,
        "requests": 3,
    }
    # stderr is not a terminal: no progress bar, only the throttling notice (this server
    # keeps ServerConfig's 1000 events/s, so 2500 events wait for it)
    assert "\r" not in err and "[" not in err
    assert "throttled by the server" in err and "--publish-rate" in err


async def test_publish_ndjson_error_names_the_file_line_and_what_went_before(
    server: LiveServer, tmp_path: Path
) -> None:
    lines = [orjson.dumps({"n": i}) for i in range(1, 2001)]
    lines[1499] = b'{"n": 1500'  # line 1500, in the second request
    path = tmp_path / "bad.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rc, out, err = await run(command("publish", subject="s.x", to=server.http, file=str(path)))
    assert (rc, out) == (1, "")
    assert "bad_json" in err and "line 1500" in err and "after 1000 accepted" in err
    assert '"line":1500' in err  # the server's JSON error, with the file's line number
    # the refused request published nothing; the one before it stays
    assert len(server.broker.history(">")) == 1000


async def test_publish_server_errors_exit_1_with_the_json_error(server: LiveServer) -> None:
    rc, out, err = await run(command("publish", subject="bad..subject", to=server.http, data="1"))
    assert (rc, out) == (1, "")
    assert "HTTP 400 bad_subject" in err and '{"error":' in err
    assert server.broker.history(">") == []


async def test_publish_refuses_bad_arguments_with_exit_2(tmp_path: Path) -> None:
    rc, _, err = await run(
        command("publish", subject="a", to="http://127.0.0.1:9", data="{bad json")
    )
    assert rc == 2 and "malformed JSON" in err
    rc, _, err = await run(
        command("publish", subject="a", to="http://127.0.0.1:9", file=str(tmp_path / "none"))
    )
    assert rc == 2 and "no such file" in err


def test_progress_bar_draws_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        clock = iter([0.0, 1.0, 2.0, 4.0]).__next__
        bar = Progress(4096, stream, interval=0, clock=clock)
        bar.update(5, 1024)
        bar.update(10, 4096)
        bar.finish()
    assert pipe.getvalue() == ""
    frames = tty.getvalue().split("\r")[1:]
    assert (
        frames[0].startswith("[")
        and " 25%  5 events  1.0 KiB/4.0 KiB  5 ev/s  ETA 0:03" in (frames[0])
    )
    assert frames[-1].rstrip().endswith("100%  10 events  4.0 KiB/4.0 KiB  2 ev/s  in 0:04")

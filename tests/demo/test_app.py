"""The demo app over real sockets, no browser: page and static files, per-nickname tokens
checked by the server's auth, connection events turned into presence, the pipeline
answering over the wire protocol, synthetic users, and the URL announced once bound."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import ClientSession, ClientWebSocketResponse, web

from adapters.demo import create_demo_app

ROOT = Path(__file__).resolve().parents[2]


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def base() -> AsyncIterator[str]:
    runner, url = await serve(create_demo_app())
    yield url
    await runner.cleanup()


async def token(http: ClientSession, base: str, nick: str) -> str:
    async with http.post(base + "/demo/token", json={"nick": nick}) as resp:
        assert resp.status == 200
        grant: str = (await resp.json())["token"]
        return grant


async def events(ws: ClientWebSocketResponse, subject: str, n: int) -> list[Any]:
    """The data of the next ``n`` events on ``subject`` (control messages skipped)."""
    got: list[Any] = []
    async with asyncio.timeout(5):
        while len(got) < n:
            msg = orjson.loads((await ws.receive()).data)
            for item in msg if isinstance(msg, list) else [msg]:
                if "op" not in item and item["subject"] == subject:
                    got.append(item["data"])
    return got


async def test_page_and_assets_are_served(base: str) -> None:
    async with ClientSession() as http:
        for path, kind in [("/", "text/html"), ("/static/app.js", "javascript")]:
            async with http.get(base + path) as resp:
                assert resp.status == 200 and kind in resp.headers["Content-Type"]
        async with http.get(base + "/static/style.css") as resp:
            assert ".firehose" in await resp.text()


async def test_closing_a_websocket_makes_its_user_leave(base: str) -> None:
    async with ClientSession() as http:
        watch = await http.ws_connect(base + f"/ws?token={await token(http, base, 'eve')}")
        await watch.send_json({"op": "subscribe", "id": "p", "pattern": "room.hall.presence"})
        # the user is the token's, whatever ?user= says
        ada = await http.ws_connect(
            base + f"/ws?cid=tab1&user=x&token={await token(http, base, 'ada')}"
        )
        join = {"cid": "tab1"}
        await ada.send_json(
            {"op": "publish", "subject": "chat.hall.in.ada", "type": "chat.join", "data": join}
        )
        first = await events(watch, "room.hall.presence", 1)
        assert first == [{"room": "hall", "user": "ada", "state": "join", "members": ["ada"]}]
        await ada.close()  # no explicit leave: the connection event is enough
        left = await events(watch, "room.hall.presence", 1)
        assert left == [{"room": "hall", "user": "ada", "state": "leave", "members": []}]
        await watch.close()


async def test_a_rejection_reaches_only_the_sender(base: str) -> None:
    async with ClientSession() as http:
        ws = await http.ws_connect(base + f"/ws?cid=t2&token={await token(http, base, 'bo')}")
        await ws.send_json({"op": "subscribe", "id": "me", "pattern": "user.bo.>"})
        data = {"text": "  ", "mid": "m7"}
        await ws.send_json(
            {"op": "publish", "subject": "chat.hall.in.bo", "type": "chat.message", "data": data}
        )
        [rejected] = await events(ws, "user.bo.rejected", 1)
        assert rejected == {"room": "hall", "text": "", "reason": "Message is empty", "mid": "m7"}
        await ws.close()


async def test_a_token_allows_its_own_notices_and_name_only(base: str) -> None:
    async with ClientSession() as http:
        async with http.post(base + "/demo/token", json={"nick": "ada"}) as resp:
            grant = await resp.json()
        assert grant["subscribe"] == ["room.>", "stats.>", "user.ada.>"]
        assert grant["publish"] == ["chat.*.in.ada"]
        async with http.post(base + "/demo/token", json={"nick": "no spaces"}) as resp:
            assert resp.status == 400
        auth = {"Authorization": f"Bearer {grant['token']}"}
        # nobody reads the firehose without a token, nor someone else's notices with one
        async with http.get(base + "/events/%3E") as resp:
            assert resp.status == 401
        for pattern in (">", "user.bob.>", "user.>", "chat.>"):
            async with http.get(base + f"/events/{pattern}", headers=auth) as resp:
                assert resp.status == 403, pattern
        async with http.get(base + "/events/user.ada.%3E", headers=auth) as resp:
            assert resp.status == 200
        ws = await http.ws_connect(base + f"/ws?cid=t3&token={grant['token']}")
        for n, subject in enumerate(["chat.hall.in.bob", "chat.hall.in", "chat.hall.in.ada"]):
            msg = {"op": "publish", "ref": f"r{n}", "subject": subject, "type": "chat.message"}
            await ws.send_json({**msg, "data": {"text": "hi"}})
        answers = [orjson.loads((await ws.receive()).data) for _ in range(3)]
        assert [(a["op"], a.get("code")) for a in answers] == [
            ("error", "forbidden"),
            ("error", "forbidden"),
            ("ack", None),
        ]
        await ws.close()


async def test_synthetic_users_keep_rooms_and_firehose_alive() -> None:
    runner, url = await serve(create_demo_app(bots=3, bot_pace=0.05))
    try:
        async with ClientSession() as http:
            ws = await http.ws_connect(url + f"/ws?token={await token(http, url, 'eve')}")
            await ws.send_json({"op": "subscribe", "id": "r", "pattern": "room.*.msg"})
            got = await events(ws, "room.lobby.msg", 2)
            assert {m["user"] for m in got} <= {"kai_bot", "leo_bot"}
            await ws.close()
    finally:
        await runner.cleanup()


def test_module_entry_point_shows_its_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "adapters.demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    ).stdout
    assert "--host" in out and "--port" in out and "--broker" in out


def test_make_demo_takes_port_and_host() -> None:
    out = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "demo", "PORT=9000", "HOST=0.0.0.0"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert "demo --host 0.0.0.0 --port 9000" in out


async def test_demo_announces_its_url_only_once_it_listens() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli",
        "demo",
        "--port",
        "0",
        "--bots",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "RXSTREAMS_DEMO_SECRET": "s" * 32},
    )
    assert proc.stdout is not None
    try:
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert first.startswith("rxstreams demo: open http://127.0.0.1:"), first
        url = first.split()[3].rstrip("/")
        assert not url.endswith(":0")  # the port really bound, not the one asked for
        async with ClientSession() as http, http.get(url + "/healthz") as resp:
            assert resp.status == 200  # at once: no retry needed
        rest = (await asyncio.wait_for(proc.stdout.read(400), 5)).decode()
        assert "1 synthetic user chats" in rest and "export RXSTREAMS_TOKEN=" in rest
        # signed with $RXSTREAMS_DEMO_SECRET: another demo on the same broker accepts it
        token = rest.split("export RXSTREAMS_TOKEN=")[1].split()[0]
        assert jwt.decode(token, "s" * 32, algorithms=["HS256"])["subscribe"] == [">"]
    finally:
        proc.send_signal(2)
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0

"""The demo app over real sockets, no browser: page and static files, connection events
turned into presence, the pipeline answering over the wire protocol."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, ClientWebSocketResponse, web

from adapters.demo import create_demo_app


@pytest.fixture
async def base() -> AsyncIterator[str]:
    runner = web.AppRunner(create_demo_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


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
        watch = await http.ws_connect(base + "/ws")
        await watch.send_json({"op": "subscribe", "id": "p", "pattern": "room.hall.presence"})
        ada = await http.ws_connect(base + "/ws?cid=tab1&user=ada")
        join = {"user": "ada", "cid": "tab1"}
        await ada.send_json(
            {"op": "publish", "subject": "chat.hall.in", "type": "chat.join", "data": join}
        )
        first = await events(watch, "room.hall.presence", 1)
        assert first == [{"room": "hall", "user": "ada", "state": "join", "members": ["ada"]}]
        await ada.close()  # no explicit leave: the connection event is enough
        left = await events(watch, "room.hall.presence", 1)
        assert left == [{"room": "hall", "user": "ada", "state": "leave", "members": []}]
        await watch.close()


async def test_a_rejection_reaches_only_the_sender(base: str) -> None:
    async with ClientSession() as http:
        ws = await http.ws_connect(base + "/ws?cid=t2&user=bo")
        await ws.send_json({"op": "subscribe", "id": "me", "pattern": "user.bo.>"})
        data = {"user": "bo", "text": "  "}
        await ws.send_json(
            {"op": "publish", "subject": "chat.hall.in", "type": "chat.message", "data": data}
        )
        [rejected] = await events(ws, "user.bo.rejected", 1)
        assert rejected["reason"] == "Message is empty"
        await ws.close()


def test_module_entry_point_shows_its_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "adapters.demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    ).stdout
    assert "--host" in out and "--port" in out and "--broker" in out

"""Two ``rxstreams demo`` processes on one networked broker run the chat pipeline once (issue 10).

Each process is a member of the demo's keyed worker group (partitions by room): a message
sent through server A reaches a reader on server B exactly once, and so do the presence
changes and a refusal (which reaches only its sender). Real processes, real NATS and Redis,
a fresh stream per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.brokers.stateful_worker import state_store
from adapters.demo.cluster import GROUP
from tests.brokers.conftest import build, dispose, unique_stream
from tests.brokers.services import require

from .serving import GUARD, CliProcess

pytestmark = pytest.mark.broker

SETTLE = 2.0  # seconds to wait after the last expected event for a repeat (none may come)


class Demo(CliProcess):
    """One ``rxstreams demo`` subprocess on a free port."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        super().__init__(proc, url)
        self.ws_url = url.replace("http", "ws", 1)

    @classmethod
    async def start(cls, broker_url: str, secret: str) -> Demo:
        args = ["demo", "--port", "0", "--bots", "0", "--broker", broker_url]
        proc, line = await cls.spawn(args, " open ", {"RXSTREAMS_DEMO_SECRET": secret})
        return cls(proc, line.split(" open ", 1)[1].split()[0].rstrip("/"))

    async def token(self, http: aiohttp.ClientSession, nick: str) -> str:
        async with http.post(self.url + "/demo/token", json={"nick": nick}) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["token"])


@pytest.fixture(params=["nats", "redis"])
async def demos(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Demo, Demo]]:
    kind = str(request.param)
    stream = unique_stream()
    url = f"{require(kind)}?stream={stream}"
    secret = os.urandom(16).hex()
    started = await asyncio.gather(
        *(Demo.start(url, secret) for _ in range(2)), return_exceptions=True
    )
    try:
        for item in started:
            if isinstance(item, BaseException):
                raise item
        a, b = started
        assert isinstance(a, Demo) and isinstance(b, Demo)
        yield a, b
    finally:
        for item in started:
            if isinstance(item, Demo):
                await item.stop()
        broker = build(kind, stream=stream)
        store = state_store(broker, GROUP)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.drop(), 10)
        await dispose(broker)  # drop the test's stream


class Reader:
    """Everything a WebSocket delivers, by subject, read in the background."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            value = orjson.loads(msg.data)
            for item in value if isinstance(value, list) else [value]:
                assert item.get("op") in (None, "subscribed", "ack"), item
                if "op" not in item:
                    self.events.append(item)
                    self.changed.set()

    def of(self, subject: str) -> list[Any]:
        return [e["data"] for e in self.events if e["subject"] == subject]

    async def until(self, done: Any) -> None:
        async def wait() -> None:
            while not done():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), 4 * GUARD)  # a rebalance may hold events briefly

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def publish(ws: aiohttp.ClientWebSocketResponse, subject: str, type: str, data: Any) -> str:
    """Publish through ``ws`` and wait for its ack: the event's position."""
    ref = os.urandom(4).hex()
    await ws.send_json(
        {"op": "publish", "ref": ref, "subject": subject, "type": type, "data": data}
    )
    while True:
        msg = await asyncio.wait_for(ws.receive(), GUARD)
        answer = orjson.loads(msg.data)
        if answer.get("ref") == ref:
            assert answer["op"] == "ack", answer
            return str(answer["position"])


async def subscribe(reader: Reader, since: str, *patterns: str) -> None:
    for n, pattern in enumerate(patterns):
        await reader.ws.send_json(
            {"op": "subscribe", "id": f"s{n}", "pattern": pattern, "since": since}
        )


async def test_each_message_presence_change_and_refusal_reaches_server_b_once(
    demos: tuple[Demo, Demo],
) -> None:
    a, b = demos
    async with aiohttp.ClientSession() as http:
        ada_token, bob_token = await a.token(http, "ada"), await b.token(http, "bob")
        # ada writes through server A; her first event's position is where readers start
        ada = await http.ws_connect(f"{a.ws_url}/ws?cid=ada-a&token={ada_token}")
        start = await publish(ada, "chat.r1.in.ada", "chat.join", {"cid": "ada-a"})
        # bob reads on server B, and so does a second tab of ada's (her notices)
        bob = Reader(await http.ws_connect(f"{b.ws_url}/ws?cid=bob-b&token={bob_token}"))
        await subscribe(bob, start, "room.>", "user.bob.>")
        ada_b = Reader(await http.ws_connect(f"{b.ws_url}/ws?cid=ada-b&token={ada_token}"))
        await subscribe(ada_b, start, "user.ada.>")
        join = {"op": "publish", "subject": "chat.r1.in.bob", "type": "chat.join"}
        await bob.ws.send_json({**join, "data": {"cid": "bob-b"}})  # read by bob's Reader
        mids = [f"m{i}" for i in range(4)]
        for mid in mids:
            await publish(ada, "chat.r1.in.ada", "chat.message", {"text": f"hi {mid}", "mid": mid})
        await publish(ada, "chat.r1.in.ada", "chat.message", {"text": " ", "mid": "empty"})

        def joined() -> list[tuple[str, str]]:
            return [(c["user"], c["state"]) for c in bob.of("room.r1.presence")]

        await bob.until(lambda: len(bob.of("room.r1.msg")) >= len(mids) and len(joined()) >= 2)
        await ada_b.until(lambda: ada_b.of("user.ada.rejected"))
        await ada.close()  # no leave: the closed connection makes ada leave r1
        await bob.until(lambda: ("ada", "leave") in joined())
        await asyncio.sleep(SETTLE)  # a repeat, if any, would arrive by now

        delivered = Counter(m["mid"] for m in bob.of("room.r1.msg"))
        assert delivered == Counter(mids), delivered  # each once, none refused
        assert [m["text"] for m in bob.of("room.r1.msg")] == [f"hi {m}" for m in mids]
        assert Counter(joined()) == Counter(
            {("ada", "join"): 1, ("bob", "join"): 1, ("ada", "leave"): 1}
        ), joined()
        assert ada_b.of("user.ada.rejected") == [
            {"room": "r1", "text": "", "reason": "Message is empty", "mid": "empty"}
        ]
        assert bob.of("user.bob.rejected") == []
        await bob.close()
        await ada_b.close()


CHROMIUM = Path("/usr/bin/chromium")


async def enter(context: Any, demo: Demo, nick: str, room: str) -> Any:
    """Open the chat on ``demo``, pick a nickname and room, and wait until present."""
    page = await context.new_page()
    await page.goto(demo.url)
    await page.fill("#nick", nick)
    await page.fill("#first-room", room)
    await page.click("#enter")
    await page.wait_for_selector("#status.pill-ok")
    await page.wait_for_selector(f"#members li:text-is('{nick}')", state="attached")
    return page


async def say(page: Any, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def count(page: Any, selector: str) -> int:
    return int(await page.eval_on_selector_all(selector, "els => els.length"))


@pytest.mark.browser
async def test_two_pages_on_two_servers_see_each_message_once(demos: tuple[Demo, Demo]) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing: run scripts/ensure-chromium")
        pytest.skip(f"{CHROMIUM} not found (run scripts/ensure-chromium)")
    async_api = pytest.importorskip("playwright.async_api")
    a, b = demos
    async with async_api.async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        context = await browser.new_context(viewport={"width": 1360, "height": 820})
        context.set_default_timeout(4 * GUARD * 1000)  # a rebalance may hold events briefly
        try:
            ada = await enter(context, a, "ada", "design")
            bob = await enter(context, b, "bob", "design")
            await ada.wait_for_selector("#messages li.presence[data-user=bob]")
            lines = ["Morning from server A", "The pipeline runs once", "Per room, per cluster"]
            for line in lines:
                await say(ada, line)
            await say(ada, "   ")  # refused: only ada hears about it
            await ada.wait_for_selector("#messages li.refused:has-text('Message is empty')")
            await bob.wait_for_function(
                f"document.querySelectorAll('#messages li.msg').length >= {len(lines)}"
            )
            await say(bob, "Seen on server B")
            await ada.wait_for_selector("#messages li.msg[data-user=bob]")
            await asyncio.sleep(SETTLE)  # a repeat, if any, would be on the pages by now
            texts = "els => els.map(e => e.querySelector('.text').textContent)"
            delivered = "#messages li.msg:not(.refused)"
            on_b = await bob.eval_on_selector_all(delivered, texts)
            on_a = await ada.eval_on_selector_all(delivered, texts)
            assert on_b == on_a == [*lines, "Seen on server B"]
            assert await count(ada, "#messages li.refused") == 1
            assert await count(bob, "#messages li.refused") == 0
            assert await count(ada, "#messages li.presence[data-user=bob]") == 1
            await bob.close()  # presence: ada (server A) sees bob (server B) leave, once
            await ada.wait_for_selector("#messages li.presence[data-user=bob]:has-text('left')")
            await asyncio.sleep(SETTLE)
            assert await count(ada, "#messages li.presence[data-user=bob]") == 2
        finally:
            await context.close()
            await browser.close()

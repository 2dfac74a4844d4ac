"""The demo in headless Chromium: two people chat, presence, history, rejections, and the
firehose's EventSource resuming after the server drops it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from adapters.server import BROKER, HUB
from adapters.server.delivery import StreamClient
from streams import MemoryBroker

from .conftest import DemoServer

pytestmark = pytest.mark.browser
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"


def enter(context: Any, server: DemoServer, nick: str, room: str) -> Any:
    """Open the page, pick a nickname and room, and wait until we are present."""
    page = context.new_page()
    page.goto(server.url)
    page.fill("#nick", nick)
    page.fill("#first-room", room)
    page.click("#enter")
    page.wait_for_selector("#status.pill-ok")
    page.wait_for_selector(f"#members li:text-is('{nick}')")
    return page


def say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def messages(page: Any) -> list[tuple[str, str]]:
    return [
        tuple(pair)
        for pair in page.eval_on_selector_all(
            "#messages li.msg",
            "els => els.map(e => [e.dataset.user, e.querySelector('.text').textContent])",
        )
    ]


def members(page: Any) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        "#members li", "els => els.map(e => e.textContent)"
    )
    return names


def test_two_people_chat_with_history_presence_and_typing(context: Any, server: DemoServer) -> None:
    ada = enter(context, server, "ada", "design")
    say(ada, "Morning! Anyone around to review the pipeline?")
    ada.wait_for_selector("#messages li.msg.mine")

    bob = enter(context, server, "bob", "design")
    # history: the message sent before bob joined is on his page
    bob.wait_for_selector("#messages li.msg[data-user=ada]")
    assert messages(bob) == [("ada", "Morning! Anyone around to review the pipeline?")]
    # presence: both see both, and ada saw bob join
    ada.wait_for_function("document.querySelectorAll('#members li').length === 2")
    assert members(ada) == members(bob) == ["ada", "bob"]
    ada.wait_for_selector("#messages li.presence[data-user=bob]")

    say(bob, "Sure, the rate limit stage looks good to me.")
    ada.wait_for_selector("#messages li.msg[data-user=bob]")
    say(ada, "Great. Typing signals are throttled per user, too.")
    bob.wait_for_function("document.querySelectorAll('#messages li.msg').length === 3")
    say(bob, "And a rejected message only comes back to its sender.")
    ada.wait_for_function("document.querySelectorAll('#messages li.msg').length === 4")
    assert messages(bob) == messages(ada)
    assert [u for u, _ in messages(ada)] == ["ada", "bob", "ada", "bob"]

    bob.type("#text", "Looks")  # keystrokes publish chat.typing; the pipeline throttles them
    ada.wait_for_selector("#typing:has-text('bob is typing')")
    ada.wait_for_selector("#fire li[data-id]")
    ada.wait_for_selector("#room-rate:has-text('msg/min')")
    if os.environ.get("UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        ada.screenshot(path=str(SCREENSHOT))

    bob.close()  # closing the tab closes the WebSocket: presence says bob left
    ada.wait_for_selector("#messages li.presence[data-user=bob]:has-text('left')")
    assert members(ada) == ["ada"]


def test_empty_and_oversized_messages_are_rejected_visibly(
    context: Any, server: DemoServer
) -> None:
    cy = enter(context, server, "cy", "rules")
    say(cy, "   ")
    cy.wait_for_selector("#error:has-text('Message is empty')")
    say(cy, "x" * 201)
    cy.wait_for_selector("#error:has-text('longer than 200 characters')")
    say(cy, "this one is fine")
    cy.wait_for_selector("#messages li.msg")
    assert messages(cy) == [("cy", "this one is fine")]


def test_firehose_resumes_after_the_server_drops_it(context: Any, server: DemoServer) -> None:
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_function("window.demo.sseOpens === 1")
    broker = server.app[BROKER]
    assert isinstance(broker, MemoryBroker)

    def publish(n: int, subject: str) -> list[str]:
        return [str(broker.publish(subject, {"n": i})) for i in range(n)]

    before = server.run(lambda: publish(3, "resume.before"))
    page.wait_for_function(f"window.demo.firehose.includes({before[-1]!r})")

    def drop_and_publish() -> list[str]:
        streams = [c for c in server.app[HUB].clients if isinstance(c, StreamClient)]
        assert streams, "the page's SSE stream is connected"
        for c in streams:
            assert isinstance(c.transport, asyncio.WriteTransport)
            c.transport.abort()  # the server drops the connection ...
        return publish(5, "resume.during")  # ... and events keep coming

    during = server.run(drop_and_publish)
    page.wait_for_function("window.demo.sseOpens === 2")  # EventSource reconnected
    after = server.run(lambda: publish(2, "resume.after"))
    page.wait_for_function(f"window.demo.firehose.includes({after[-1]!r})")

    seen: list[str] = page.evaluate("window.demo.firehose")
    assert len(seen) == len(set(seen)), "no event shown twice"
    ours = before + during + after
    assert [i for i in seen if i in ours] == ours, "every event exactly once, in order"

"""The demo in headless Chromium: two people chat, presence, history, delivery states,
grouping, unread counts, rooms ageing out, a firehose limited by each nickname's token and
resuming after the server drops it, and the layout at phone and desktop sizes."""

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
    page.wait_for_selector(f"#members li:text-is('{nick}')", state="attached")
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


def states(page: Any) -> list[tuple[str, str]]:
    """(text, delivery line) of each of my messages, in order."""
    return [
        tuple(pair)
        for pair in page.eval_on_selector_all(
            "#messages li.msg.mine",
            "els => els.map(e => [e.querySelector('.text').textContent,"
            " (e.querySelector('.state') || {}).textContent || ''])",
        )
    ]


def test_refused_messages_stay_with_their_reason_next_to_them(
    context: Any, server: DemoServer
) -> None:
    cy = enter(context, server, "cy", "rules")
    say(cy, "   ")
    cy.wait_for_selector("#messages li.refused:has-text('refused: Message is empty')")
    say(cy, "x" * 201)
    cy.wait_for_selector("#messages li.refused:has-text('longer than 200 characters')")
    say(cy, "this one is fine")
    cy.wait_for_selector("#messages li.msg.latest[data-state=sent]:has-text('this one is fine')")
    assert cy.is_visible("#messages li.latest .state:text-is('sent ✓')")
    say(cy, "this one is fine")  # a repeat: refused by dedupe, with its reason
    cy.wait_for_selector("#messages li.refused:has-text('Already said')")
    assert [(t, s.split(" ·")[0]) for t, s in states(cy)] == [
        ("", "refused: Message is empty"),
        ("x" * 201, "refused: Message is longer than 200 characters"),
        ("this one is fine", "sent ✓"),
        (
            "this one is fine",
            "refused: Already said: the same message is accepted again after 30 s",
        ),
    ]
    # the text is not lost: a tap puts it back in the composer
    cy.click("#messages li.refused >> nth=1")
    assert cy.input_value("#text") == "x" * 201
    # the composer empties at once and the message shows "sending…" until the server acks it
    cy.evaluate("window.demo.state.ws.send = () => {}")  # the server never hears it
    say(cy, "into the void")
    cy.wait_for_selector("#messages li[data-state=sending]:has-text('sending…')")
    assert cy.input_value("#text") == ""


def test_consecutive_messages_are_grouped_and_other_rooms_count_unread(
    context: Any, server: DemoServer
) -> None:
    dee = enter(context, server, "dee", "north")
    eve = enter(context, server, "eve", "north")
    say(dee, "one")
    say(dee, "two")
    say(eve, "three")
    say(eve, "four")
    dee.wait_for_function("document.querySelectorAll('#messages li.msg[data-state=sent], "
                          "#messages li.msg:not(.mine)').length === 4")  # fmt: skip
    grouped = dee.eval_on_selector_all(
        "#messages li.msg", "els => els.map(e => [e.dataset.user, e.classList.contains('cont')])"
    )
    assert grouped == [["dee", False], ["dee", True], ["eve", False], ["eve", True]]

    # eve moves to #south; dee's list shows south with the messages dee has not read
    eve.fill("#room-input", "south")
    eve.press("#room-input", "Enter")
    eve.wait_for_selector("#room-title:has-text('#south')")
    say(eve, "anyone in the south?")
    say(eve, "hello?")
    dee.wait_for_selector("#rooms li[data-room=south] .unread:text-is('2')")
    dee.click("#rooms li[data-room=south]")
    dee.wait_for_selector("#room-title:has-text('#south')")
    assert dee.query_selector("#rooms li[data-room=south] .unread") is None
    dee.wait_for_function("document.querySelectorAll('#messages li.msg').length === 2")  # history
    assert [t for _, t in messages(dee)] == ["anyone in the south?", "hello?"]


def test_empty_rooms_age_out_of_the_list(context: Any, server: DemoServer) -> None:
    fay = enter(context, server, "fay", "attic")
    gus = enter(context, server, "gus", "lobby")
    gus.wait_for_selector("#rooms li[data-room=attic]")  # fay is there
    gus.evaluate("window.demo.state.roomTtl = 300")
    fay.close()  # attic is empty now, and after roomTtl it leaves gus's list
    gus.wait_for_selector("#rooms li[data-room=attic]", state="detached")
    assert gus.eval_on_selector_all("#rooms li", "els => els.map(e => e.dataset.room)") == ["lobby"]


def test_firehose_shows_only_what_the_token_allows(context: Any, server: DemoServer) -> None:
    hal = enter(context, server, "hal", "vault")
    ida = enter(context, server, "ida", "vault")
    ida.wait_for_function("window.demo.sseOpens === 3")  # room.>, stats.>, user.ida.>
    say(hal, "   ")  # refused: hal's private notice
    hal.wait_for_selector("#messages li.refused")
    say(hal, "public words")
    ida.wait_for_selector("#fire li .subj:text-is('room.vault.msg')")
    subjects = ida.eval_on_selector_all("#fire li .subj", "els => els.map(e => e.textContent)")
    assert not [s for s in subjects if s.startswith(("user.hal", "chat."))], subjects
    assert "room.>" in ida.text_content("#fire-allowed")
    hal.wait_for_selector("#fire li .subj:text-is('user.hal.rejected')")  # hal sees his own
    # asking for more than the token allows is refused, and says so
    ida.fill("#fire-pattern", "user.hal.>")
    ida.press("#fire-pattern", "Enter")
    ida.wait_for_selector("#fire-state:has-text('refused: your token does not allow user.hal.>')")


PHONE = {"width": 360, "height": 740}
IPHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1360, "height": 820}


def box(page: Any, selector: str) -> dict[str, float]:
    found = page.query_selector(selector)
    assert found is not None, selector
    b = found.bounding_box()
    assert b is not None, f"{selector} is not visible"
    return dict(b)


@pytest.mark.parametrize("size", [PHONE, IPHONE], ids=["360", "390"])
def test_phone_layout_chat_first_and_every_panel_reachable(
    browser: Any, server: DemoServer, size: dict[str, int]
) -> None:
    ctx = browser.new_context(viewport=size, is_mobile=True, has_touch=True)
    ctx.set_default_timeout(10_000)
    try:
        page = enter(ctx, server, f"ph{size['width']}", "pocket")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= size["width"], "no sideways scrolling"
        # the chat fills the screen: the list and composer are usable, not 0-4 px wide
        assert box(page, "#messages")["width"] >= size["width"] - 40
        assert box(page, "#text")["width"] >= 0.6 * size["width"]
        composer = box(page, "#composer")
        assert composer["y"] + composer["height"] <= size["height"]
        say(page, "typed on a phone")
        page.wait_for_selector("#messages li[data-state=sent]:has-text('typed on a phone')")
        bubble = box(page, "#messages li.mine .bubble")
        assert bubble["x"] >= 0 and bubble["x"] + bubble["width"] <= size["width"]
        assert not page.is_visible("#rooms") and not page.is_visible("#fire-form")
        page.click("#tab-rooms")
        assert page.is_visible("#rooms li[data-room=pocket]") and not page.is_visible("#text")
        page.click("#tab-fire")
        page.wait_for_selector("#fire li[data-id]")
        assert box(page, "#fire")["width"] >= size["width"] - 40
        page.click("#tab-rooms")
        page.click("#rooms li[data-room=lobby]")  # picking a room goes back to the chat
        page.wait_for_selector("#room-title:has-text('#lobby')")
        assert page.is_visible("#text")
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
    finally:
        ctx.close()


def test_desktop_layout_shows_rooms_chat_and_firehose_side_by_side(
    browser: Any, server: DemoServer
) -> None:
    ctx = browser.new_context(viewport=DESKTOP)
    try:
        page = enter(ctx, server, "wide", "hall")
        assert not page.is_visible(".tabs")
        rooms, chat, fire = (box(page, s) for s in (".rooms", ".chat", ".firehose"))
        assert rooms["x"] + rooms["width"] <= chat["x"] and chat["x"] + chat["width"] <= fire["x"]
        assert chat["width"] >= 600
        assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["width"]
    finally:
        ctx.close()


def test_firehose_resumes_after_the_server_drops_it(context: Any, server: DemoServer) -> None:
    page = enter(context, server, "res", "resume")
    page.wait_for_function("window.demo.sseOpens === 3")
    broker = server.app[BROKER]
    assert isinstance(broker, MemoryBroker)

    def publish(n: int, subject: str) -> list[str]:
        return [str(broker.publish(subject, {"n": i})) for i in range(n)]

    before = server.run(lambda: publish(3, "room.zz.before"))
    page.wait_for_function(f"window.demo.firehose.includes({before[-1]!r})")

    def drop_and_publish() -> list[str]:
        streams = [c for c in server.app[HUB].clients if isinstance(c, StreamClient)]
        assert streams, "the page's SSE stream is connected"
        for c in streams:
            assert isinstance(c.transport, asyncio.WriteTransport)
            c.transport.abort()  # the server drops the connection ...
        return publish(5, "room.zz.during")  # ... and events keep coming

    during = server.run(drop_and_publish)
    page.wait_for_function("window.demo.sseOpens === 6")  # every EventSource reconnected
    after = server.run(lambda: publish(2, "room.zz.after"))
    page.wait_for_function(f"window.demo.firehose.includes({after[-1]!r})")

    seen: list[str] = page.evaluate("window.demo.firehose")
    assert len(seen) == len(set(seen)), "no event shown twice"
    ours = before + during + after
    assert [i for i in seen if i in ours] == ours, "every event exactly once, in order"

"""Synthetic users for the demo (``rxstreams demo --bots N``).

A few seeded bots join rooms and chat at a human pace, so the firehose, the room list and
the per-room statistics are alive on first open. They publish exactly what a browser
would (``chat.join``, ``chat.typing``, ``chat.message`` on ``chat.<room>.in.<bot>``), so
everything they say goes through the same pipeline and the same rules.

:func:`script` is the plan (pure, seeded); :func:`run_bots` plays it against a broker.

>>> [(step.delay > 0, step.kind, step.user) for step in script(2, seed=1)[:2]]
[(False, 'chat.join', 'kai_bot'), (False, 'chat.join', 'mia_bot')]
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass

from streams import Broker, Event

__all__ = ["BOT_NAMES", "BOT_ROOMS", "Step", "run_bots", "script"]

BOT_NAMES = ("kai_bot", "mia_bot", "leo_bot", "zoe_bot", "ivy_bot", "max_bot", "ada_bot")
BOT_ROOMS = ("lobby", "random")
_LINES = (
    "anyone tried the sliding window on event time?",
    "the rate limit stage just saved us from a flood",
    "batching by room keeps the frame count down",
    "replaying history after a reconnect, no gaps",
    "coffee first, then the broker migration",
    "typing indicators are throttled to one per 2 s",
    "who broke the build? it is green again",
    "NATS or Redis for the next deploy?",
    "the firehose only shows what my token allows",
    "dedupe dropped my repeated message, fair enough",
    "lunch in ten minutes",
    "reviewing the pipeline graph now",
)
SOURCE = "rxstreams/demo-bots"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Step:
    """After ``delay`` seconds, ``user`` publishes ``kind`` (with ``text``) to ``room``."""

    delay: float
    user: str
    room: str
    kind: str
    text: str | None = None


def script(n: int, seed: int = 0, pace: float = 4.0) -> list[Step]:
    """The first steps of ``n`` bots: everyone joins, then a message roughly every
    ``pace`` seconds (shared by all bots), sometimes preceded by typing.

    >>> steps = script(3, seed=2, pace=1.0)
    >>> {s.kind for s in steps[3:]} <= {"chat.typing", "chat.message"}
    True
    """
    return list(itertools.islice(_steps(n, seed, pace), 200))


def _steps(n: int, seed: int, pace: float) -> Iterator[Step]:
    rnd = random.Random(seed)
    bots = BOT_NAMES[: max(0, min(n, len(BOT_NAMES)))]
    rooms = {bot: BOT_ROOMS[i % len(BOT_ROOMS)] for i, bot in enumerate(bots)}
    for bot in bots:
        yield Step(0.0, bot, rooms[bot], "chat.join")
    counter = itertools.count(1)
    while bots:
        bot = rnd.choice(bots)
        wait = rnd.uniform(0.5, 1.5) * pace
        if rnd.random() < 0.5:
            yield Step(wait * 0.7, bot, rooms[bot], "chat.typing")
            wait *= 0.3
        # a counter keeps the text unique, so dedupe never refuses a bot
        text = f"{rnd.choice(_LINES)} (#{next(counter)})"
        yield Step(wait, bot, rooms[bot], "chat.message", text)


async def run_bots(broker: Broker, n: int, seed: int = 0, pace: float = 4.0) -> None:
    """Play the bots' script against ``broker`` until cancelled."""
    for step in _steps(n, seed, pace):
        if step.delay:
            await asyncio.sleep(step.delay)
        data: dict[str, str] = {"cid": f"bot-{step.user}"}
        if step.text is not None:
            data["text"] = step.text
        event = Event.create(data, type=step.kind, source=SOURCE)
        try:
            await broker.apublish(f"chat.{step.room}.in.{step.user}", event)
        except Exception:
            log.exception("demo bots: publishing failed")

"""The chat pipeline handed over between members of a keyed worker group: the per-user rate
limits (stages inside ``group_by_key``) go on where they stood, as do repeats and presence.

What a member does on takeover, without the broker: build the pipeline while collecting its
stateful stages, snapshot, build it again elsewhere (another clock), restore, go on.
"""

from __future__ import annotations

from typing import Any

import orjson
from reactivex import Subject
from reactivex.testing import TestScheduler

from adapters.demo.pipeline import Rules, build_pipeline
from operators.state import Stateful, collecting, restore_all, snapshot_all
from streams import Event

RULES = Rules(rate=0.1, burst=3)


class Member:
    """One member's copy of the chat pipeline, on its own virtual clock."""

    def __init__(self, start: float) -> None:
        self.scheduler = TestScheduler()
        self.scheduler.advance_to(start)
        self.inbound: Subject[Event] = Subject()
        self.sent: list[tuple[str, list[Any]]] = []
        with collecting() as stages:
            build_pipeline(self.inbound, self.send, RULES, scheduler=self.scheduler)
        self.stages: dict[str, Stateful] = stages

    def send(self, subject: str, _type: str, items: list[Any]) -> None:
        self.sent.append((subject, items))

    def say(self, user: str, text: str) -> None:
        data = {"text": text, "mid": text}
        self.inbound.on_next(Event.create(data, subject=f"chat.lobby.in.{user}",
                                          type="chat.message"))  # fmt: skip
        self.scheduler.advance_by(0.05)  # the batch window passes: delivered

    def refused(self) -> list[str]:
        return [
            i["reason"].split(":")[0] for s, items in self.sent if "rejected" in s for i in items
        ]

    def handed_over(self, start: float) -> Member:
        snapshot = orjson.loads(orjson.dumps(snapshot_all(self.stages)))
        other = Member(start)
        restore_all(other.stages, snapshot)
        return other


def test_a_users_rate_limit_survives_a_handover() -> None:
    first = Member(0.0)
    for i in range(RULES.burst):
        first.say("ada", f"hello {i}")
    first.say("bob", "hi")
    assert first.refused() == []
    assert any('group_by_key-1["ada"]/rate_limit' in name for name in first.stages)
    second = first.handed_over(500.0)
    second.say("ada", "one more")  # ada's bucket is empty on the new member too
    second.say("bob", "hi again")  # bob had tokens left
    second.say("ada", "hello 0")  # and a repeat is still one
    assert second.refused() == ["Slow down", "Already said"]


def test_without_the_groups_state_the_limit_would_start_over() -> None:
    """The control: a fresh pipeline lets the same message through."""
    fresh = Member(500.0)
    fresh.say("ada", "one more")
    assert fresh.refused() == []


def test_a_pending_typing_signal_is_checkpointed_and_sent_after_the_handover() -> None:
    """The per-typist throttle holds the latest signal of a period: a checkpoint taken then
    stores it (as plain JSON) and the new member sends it when the period ends."""
    first = Member(0.0)
    for _ in range(2):
        first.inbound.on_next(Event.create({}, subject="chat.lobby.in.ada", type="chat.typing"))
    typing = [s for s, _ in first.sent if s == "room.lobby.typing"]
    assert typing == ["room.lobby.typing"]  # the first at once, the second waits
    second = first.handed_over(500.0)
    second.scheduler.advance_by(RULES.typing_every)
    assert [(s, i) for s, i in second.sent if s == "room.lobby.typing"] == [
        ("room.lobby.typing", [{"user": "ada"}])
    ]

"""The chat pipeline as a keyed worker group runs it (adapters.demo.cluster), without a
broker: one partition's pipeline checkpointed mid-conversation and restored into a fresh
one goes on as if nothing happened (membership, repeats, a batch in progress)."""

from __future__ import annotations

import asyncio

import orjson

from adapters.brokers.partitions import Checkpoint, key_function, partition_of
from adapters.brokers.stateful_worker import PartitionPipeline
from adapters.demo.cluster import KEY, closed_subjects, keyed_pipeline
from adapters.demo.pipeline import Rules
from streams import Event

RULES = Rules(batch_within=0.05)


def ev(subject: str, kind: str, **data: str) -> Event:
    return Event.create(data, subject=subject, type=kind)


def test_each_partition_gets_one_closed_connection_subject() -> None:
    key = key_function(KEY)
    for n in (1, 2, 4, 16):
        subjects = closed_subjects(n)
        assert len(set(subjects)) == n
        assert [partition_of(key(ev(s, "demo.conn.closed")), n) for s in subjects] == list(range(n))


async def test_a_restored_partition_remembers_members_repeats_and_batches() -> None:
    first = PartitionPipeline(keyed_pipeline(RULES))
    out = first.feed(ev("chat.hall.in.ada", "chat.join", cid="c1"))
    assert [(e.subject, e.data["state"]) for e in out] == [("room.hall.presence", "join")]
    hi = ev("chat.hall.in.ada", "chat.message", text="hi", mid="m1")
    assert [e.data["mid"] for e in first.feed(hi)] == ["m1"]  # the first of a burst at once
    assert first.feed(ev("chat.hall.in.ada", "chat.message", text="again", mid="m2")) == []
    # a checkpoint: JSON through and through, restored into a fresh pipeline elsewhere
    raw = Checkpoint("e-3", first.snapshot(), [], 3).encode()
    first.close()
    state = Checkpoint.decode(raw)
    assert state is not None and orjson.loads(raw)["state"]["presence"]
    second = PartitionPipeline(keyed_pipeline(RULES))
    second.restore(state.state)
    await asyncio.sleep(0.2)  # the batch in progress travels on the new owner's timer
    assert [(e.subject, e.data["mid"]) for e in second.drain()] == [("room.hall.msg", "m2")]
    repeat = second.feed(ev("chat.hall.in.ada", "chat.message", text="hi", mid="m3"))
    assert [(e.subject, e.data["mid"]) for e in repeat] == [("user.ada.rejected", "m3")]
    closed = second.feed(ev(closed_subjects(4)[0], "demo.conn.closed", cid="c1", user="ada"))
    assert [(e.subject, e.data["state"], e.data["members"]) for e in closed] == [
        ("room.hall.presence", "leave", [])
    ]
    second.close()

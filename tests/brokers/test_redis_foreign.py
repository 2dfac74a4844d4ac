"""Entries other producers write into a Redis stream never end a subscription (issue 16,
defect 2): plain JSON, text, fields without ``e`` become events; what cannot be read is
skipped, counted once in ``broker.skipped`` and moved past, by subscribers of every
pattern, resumed subscribers, "since X, take first" readers and worker groups alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import reactivex.operators as ops

from adapters.brokers.foreign import EXTERNAL_TYPE
from adapters.brokers.positions import redis_offset
from streams import Event, Position

from .conftest import Collector, build, dispose

pytestmark = pytest.mark.broker
GUARD = 20.0  # turns a hang into a failure

DEEP = ("[" * 300 + "]" * 300).encode()  # orjson reads it, but cannot write it back


@pytest.fixture
async def broker() -> AsyncIterator[Any]:
    b = build("redis")
    yield b
    await dispose(b)


async def add(raw: Any, broker: Any, fields: dict[str, Any]) -> Position:
    entry_id = await raw.xadd(broker.log_key, fields)
    return Position(broker.epoch, redis_offset(entry_id))


async def write_foreign(raw: Any, broker: Any) -> dict[str, Position]:
    """What other producers write, in this order; the value is each entry's position."""
    return {
        "plain": await add(raw, broker, {"s": "ext.plain", "e": b'{"amount":6}'}),
        "binary": await add(raw, broker, {"s": "ext.bin", "e": b"\xff\xfe\x00"}),
        "text": await add(raw, broker, {"s": "ext.text", "e": b"hello"}),
        "no_subject": await add(raw, broker, {"note": "orphan", "amount": 6}),
        "fields": await add(raw, broker, {"s": "ext.fields", "amount": 6, "note": "hi"}),
        "deep": await add(raw, broker, {"s": "ext.deep", "e": DEEP}),
        "bad_subject": await add(raw, broker, {"s": "ext..bad", "e": b"{}"}),
    }


READABLE = ["plain", "text", "fields"]
UNREADABLE = {"binary", "no_subject", "deep", "bad_subject"}


def expected_data(name: str) -> Any:
    return {"plain": {"amount": 6}, "text": "hello", "fields": {"amount": "6", "note": "hi"}}[name]


def check_foreign(event: Event, name: str, at: Position, stream: str) -> None:
    assert event.data == expected_data(name)
    assert event.type == EXTERNAL_TYPE
    assert event.sequence == str(at)
    assert event.id == f"redis://{stream}/{at}"
    assert event.source == f"redis://{stream}"
    ms = at.offset >> 20
    assert event.time.startswith(
        datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    )


async def test_foreign_entries_reach_live_and_resumed_subscribers_of_every_pattern(
    broker: Any, raw: Any
) -> None:
    start = await broker.apublish("ext.start", 0)
    live_all = Collector(broker.subscribe(">"))
    live_ext = Collector(broker.subscribe("ext.*"))
    live_other = Collector(broker.subscribe("other.>"))
    resumed = Collector(broker.subscribe(">", since=start))
    marker = await broker.apublish("ext.marker", "m")  # delivered: the live subscribers are live
    for sub in (live_all, live_ext, resumed):
        assert [e.data for e in await sub.count(1)] == ["m"]

    at = await write_foreign(raw, broker)
    after = await broker.apublish("ext.after", "after")
    other = await broker.apublish("other.x", "other")

    for sub in (live_all, live_ext, resumed):
        got = (await sub.count(5))[1:]
        names = [*READABLE, "after"]
        assert [e.sequence for e in got[:4]] == [str(at[n]) for n in READABLE] + [str(after)]
        for event, name in zip(got[:3], names, strict=False):
            check_foreign(event, name, at[name], broker.stream)
        assert got[3].data == "after" and got[3].subject == "ext.after"
    assert [e.data for e in (await live_all.count(6))[5:]] == ["other"]
    assert [e.sequence for e in await live_other.count(1)] == [str(other)]
    for sub in (live_all, live_ext, live_other, resumed):
        assert sub.error is None and not sub.completed

    # A subscriber resuming from before the junk, started after it: same events.
    late = Collector(broker.subscribe("ext.>", since=marker))
    assert [e.sequence for e in await late.count(4)] == [str(at[n]) for n in READABLE] + [
        str(after)
    ]
    # Each unreadable entry counted once, however many subscribers met it.
    assert broker.skipped.count == len(UNREADABLE)


@pytest.mark.parametrize("since", ["plain", "binary", "no_subject", "deep", "bad_subject"])
async def test_since_x_take_first_steps_over_junk(broker: Any, raw: Any, since: str) -> None:
    """The long-poll shape: subscribe after a position, take the first event."""
    await broker.apublish("ext.start", 0)
    at = await write_foreign(raw, broker)
    after = await broker.apublish("ext.after", "after")
    order = list(at)
    following = [n for n in order[order.index(since) + 1 :] if n in READABLE]
    want = str(at[following[0]]) if following else str(after)
    first: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
    broker.subscribe(">", since=at[since]).pipe(ops.take(1)).subscribe(
        first.set_result, first.set_exception
    )
    assert (await asyncio.wait_for(first, GUARD)).sequence == want


async def test_an_entry_without_subject_first_in_a_fresh_stream(broker: Any, raw: Any) -> None:
    """An outside producer writes before any rxstreams process: no ``s``, then valid ones."""
    await broker.connect()  # the stream and its epoch exist from startup
    junk = await add(raw, broker, {"x": "1"})
    sub = Collector(broker.subscribe("a.>", since=Position(broker.epoch, 0)))
    ok = await add(raw, broker, {"s": "a.b", "e": b"[1,2]"})
    assert [(e.sequence, e.data) for e in await sub.count(1)] == [(str(ok), [1, 2])]
    assert broker.skipped.count == 1 and junk < ok


async def test_a_worker_group_acknowledges_foreign_entries(broker: Any, raw: Any) -> None:
    await broker.connect()
    at = await write_foreign(raw, broker)
    after = await broker.apublish("ext.after", "after")
    got: list[Event] = []
    stop = asyncio.Event()

    async def handle(events: list[Event]) -> None:
        got.extend(events)
        if any(e.sequence == str(after) for e in events):
            stop.set()

    await asyncio.wait_for(broker.consume("g", ">", handle, consumer="w1", stop=stop), GUARD)
    assert [e.sequence for e in got] == [str(at[n]) for n in READABLE] + [str(after)]
    for event, name in zip(got, READABLE, strict=False):
        check_foreign(event, name, at[name], broker.stream)
    pending = await raw.xpending(broker.log_key, "g")
    assert pending["pending"] == 0  # unreadable entries were acknowledged too
    assert broker.skipped.count == len(UNREADABLE)


async def test_plain_redis_cli_style_fields_become_a_dict(broker: Any, raw: Any) -> None:
    """``redis-cli XADD key * s ext.x amount 6 note hi``: the other fields are the data."""
    start = await broker.apublish("ext.start", 0)
    sub = Collector(broker.subscribe("ext.x", since=start))
    await raw.execute_command(
        "XADD", broker.log_key, "*", "s", "ext.x", "amount", "6", "note", "hi"
    )
    (event,) = await sub.count(1)
    assert event.data == {"amount": "6", "note": "hi"}
    assert orjson.loads(event.encode())["data"] == {"amount": "6", "note": "hi"}


async def test_an_entry_id_beyond_a_position_is_skipped_and_own_publishes_still_work(
    broker: Any, raw: Any
) -> None:
    """``XADD key <ms>-1048576 ...``: 20 bits of sequence do not hold it. The entry is
    skipped like other junk; this broker's next publish in that millisecond still gets a
    position (it is stored at the next millisecond)."""
    start = await broker.apublish("ext.start", 0)
    sub = Collector(broker.subscribe(">", since=start))
    ms = redis_offset((await raw.xinfo_stream(broker.log_key))["last-generated-id"]) >> 20
    await raw.xadd(broker.log_key, {"s": "ext.wide", "e": b"1"}, id=f"{ms}-{1 << 20}")
    await raw.xadd(broker.log_key, {"s": "ext.wider", "e": b"2"}, id=f"{ms}-{(1 << 20) + 5}")
    mine = await broker.apublish("ext.mine", "mine")
    assert mine.offset >> 20 > ms
    assert [e.sequence for e in await sub.count(1)] == [str(mine)]
    assert sub.error is None and broker.skipped.count == 1  # one millisecond skipped once
    again = Collector(broker.subscribe("ext.>", since=start))
    assert [e.sequence for e in await again.count(1)] == [str(mine)]


async def test_a_worker_group_survives_its_stream_vanishing(broker: Any) -> None:
    """The group is created once, not every batch; when the stream (and so the group) is
    gone, the worker sets both up again and goes on with the new epoch."""
    first = await broker.apublish("job.a", 1)
    got: list[Event] = []
    stop = asyncio.Event()
    seen_first = asyncio.Event()

    async def handle(events: list[Event]) -> None:
        got.extend(events)
        seen_first.set()
        if any(e.data == 2 for e in events):
            stop.set()

    worker = asyncio.create_task(broker.consume("g", "job.>", handle, consumer="w1", stop=stop))
    try:
        await asyncio.wait_for(seen_first.wait(), GUARD)
        await broker.drop()
        second = await broker.apublish("job.b", 2)
        await asyncio.wait_for(worker, GUARD)
    finally:
        worker.cancel()
    assert [(e.data, e.sequence) for e in got] == [(1, str(first)), (2, str(second))]
    assert second.epoch != first.epoch

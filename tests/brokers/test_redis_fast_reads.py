"""RedisBroker's cheaper reads give exactly what the full reading gives: the replay scan
(entries as one JSON reply, with a fallback for entries that are not UTF-8), the in-place
reading of ``[s, subject, e, event]`` entries, and ``read_entry``'s one-build path for
events rxstreams wrote (checked against ``Event.from_dict(...).stamped(...)``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from adapters.brokers.foreign import EXTERNAL_TYPE, read_entry
from adapters.brokers.positions import redis_offset
from streams import Event, Position

from .conftest import Collector, build, dispose

pytestmark = pytest.mark.broker


@pytest.fixture
async def broker() -> AsyncIterator[Any]:
    b = build("redis", batch=8)  # small batches: replay crosses many scan replies
    yield b
    await dispose(b)


def _full(payload: bytes, subject: str, pos: Position) -> Event:
    return Event.from_dict(orjson.loads(payload)).stamped(subject, (pos.epoch, pos.offset))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"time": "2026-11-30T14:00:00.123456Z"},
        {"time": "2026-11-30T14:00:00Z"},
        {"time": "2026-11-30T15:00:00.123456+01:00"},
        {"datacontenttype": ""},
        {"datacontenttype": "text/plain", "data": "hi"},
        {"subject": "x.y", "sequence": "ep-9"},
        {"ext1": "v"},
        {"data": None},
    ],
)
def test_own_events_read_as_the_full_validation_reads_them(fields: dict[str, Any]) -> None:
    doc = {
        "specversion": "1.0",
        "id": "a1",
        "source": "src",
        "type": "t",
        "time": "2026-11-30T14:00:00.000001Z",
        "data": {"n": 1},
        **fields,
    }
    payload = orjson.dumps(doc)
    pos = Position("ep", 12)
    for _ in range(2):  # the second time the timestamp's second is known valid
        got = read_entry(payload, "a.b", pos, source="redis://S")
        assert got == _full(payload, "a.b", pos)
        assert got.to_dict() == _full(payload, "a.b", pos).to_dict()


@pytest.mark.parametrize(
    "time",
    ["2026-11-30T14:00:00.12345xZ", "2026-11-30T14:00:00.1234567", "2026-11-30T14:00:00,123456Z"],
)
def test_a_bad_timestamp_after_a_good_one_of_the_same_second_is_still_refused(time: str) -> None:
    good = Event.create({"n": 1}, id="g").encode()
    doc = orjson.loads(good)
    read_entry(good, "a.b", Position("ep", 1), source="redis://S")
    doc["time"] = doc["time"][:19] + time[19:]
    got = read_entry(orjson.dumps(doc), "a.b", Position("ep", 2), source="redis://S")
    assert got.type == EXTERNAL_TYPE  # not a valid CloudEvent: its JSON became data
    assert got.data == doc


@pytest.mark.parametrize(
    "doc",
    [
        {"specversion": "1.0", "id": "", "source": "s", "type": "t"},
        {"specversion": "1.0", "id": "a", "source": 5, "type": "t"},
        {"specversion": "1.0", "id": "a", "source": "s", "type": "t", "subject": 7},
        {"specversion": "1.0", "id": "a", "source": "s", "type": "t", "datacontenttype": 1},
        {"specversion": "0.3", "id": "a", "source": "s", "type": "t"},
        {"specversion": "1.0", "id": "a", "source": "s", "type": "t", "Bad-Ext": 1},
    ],
)
def test_invalid_cloudevents_still_become_external_events(doc: dict[str, Any]) -> None:
    got = read_entry(orjson.dumps(doc), "a.b", Position("ep", 3), source="redis://S")
    assert got.type == EXTERNAL_TYPE
    assert got.data == doc


async def test_replay_over_many_scans_with_foreign_entries_between(broker: Any, raw: Any) -> None:
    start = await broker.last_position()
    own = [Event.create({"n": i}) for i in range(30)]
    for i, event in enumerate(own):
        await broker.apublish("own.x", event)
        if i == 10:  # not UTF-8: its scan reply is not JSON, the read script reads it
            await raw.xadd(broker.log_key, {"s": "ext.bin", "e": b"\xff\xfe"})
        if i == 20:  # other fields than s and e
            await raw.xadd(broker.log_key, {"s": "ext.fields", "amount": 6, "note": "h\xe9"})
        if i == 25:  # no subject at all
            await raw.xadd(broker.log_key, {"note": "orphan"})
    await raw.xadd(broker.log_key, {"s": "ext.plain", "e": b'{"amount":6}'})
    got = Collector(broker.subscribe(">", since=start))
    try:
        events = await got.count(32)
        await asyncio.sleep(0.1)
    finally:
        got.disposable.dispose()
    assert got.error is None
    assert [e.id for e in events[:20]] == [e.id for e in own[:20]]
    assert [e.data for e in events if e.subject == "ext.fields"] == [
        {"amount": "6", "note": "h\xe9"}
    ]
    assert [e.id for e in events if e.subject == "own.x"] == [e.id for e in own]
    assert events[-1].data == {"amount": 6}
    offsets = [e.sequence for e in events]
    assert len(set(offsets)) == len(offsets) == 32
    assert broker.skipped.count == 2  # the binary payload and the entry without subject


async def test_replayed_and_live_events_equal_what_was_published(broker: Any, raw: Any) -> None:
    start = await broker.last_position()
    published = [Event.create({"n": i, "text": "é"}, type="t.x") for i in range(20)]
    positions = [await broker.apublish("a.b", e) for e in published]
    replay = Collector(broker.subscribe("a.*", since=start))
    live = Collector(broker.subscribe("a.*"))
    try:
        events = await replay.count(20)
        await asyncio.sleep(0.2)
        more = Event.create({"n": 99})
        pos = await broker.apublish("a.c", more)
        await replay.count(21)
        await live.count(1)
    finally:
        replay.disposable.dispose()
        live.disposable.dispose()
    for event, sent, at in zip(events, published, positions, strict=False):
        assert event == sent.stamped("a.b", (at.epoch, at.offset))
    assert replay.events[20] == live.events[0] == more.stamped("a.c", (pos.epoch, pos.offset))
    entry_ids = [e[0] for e in await raw.xrange(broker.log_key)]
    assert [redis_offset(i) for i in entry_ids][-21:] == [p.offset for p in [*positions, pos]]

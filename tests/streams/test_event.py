from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams import Event, EventError, encode_events

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


@given(data=json_values, type_=names, source=names, subject=st.none() | names)
def test_encode_decode_round_trip(data: object, type_: str, source: str, subject: str | None):
    e = Event.create(data, type=type_, source=source, subject=subject)
    back = Event.decode(e.encode())
    assert back == e
    assert back.data == data
    assert back.time == e.time
    assert Event.decode(back.encode()).encode() == back.encode()


def test_encoded_once_and_cached():
    e = Event.create({"x": 1})
    assert e.encode() is e.encode()
    assert e.size == len(e.encode())


def test_batch_encoding_reuses_event_bytes():
    events = [Event.create(i) for i in range(3)]
    assert orjson.loads(encode_events(events)) == [orjson.loads(e.encode()) for e in events]


def test_immutable():
    e = Event.create(1)
    with pytest.raises(AttributeError):
        e.data = 2  # type: ignore[misc]
    assert e.replace(data=2).data == 2 and e.data == 1


def test_stamped_sets_subject_and_position_only():
    e = Event.create({"a": 1}, type="t")
    s = e.stamped("chat.lobby.msg", "ab-7")
    assert (s.subject, s.sequence, s.id, s.type, s.data) == (
        "chat.lobby.msg",
        "ab-7",
        e.id,
        "t",
        e.data,
    )
    assert orjson.loads(s.encode())["sequence"] == "ab-7"


def test_ids_are_unique():
    assert len({Event.create().id for _ in range(1000)}) == 1000


def test_time_is_rfc3339_utc():
    t = Event.create().time
    assert t.endswith("Z") and "T" in t


GOOD = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}


@pytest.mark.parametrize(
    "doc, field",
    [
        (b"{nope", "json"),
        (b"[1]", "event"),
        ({k: v for k, v in GOOD.items() if k != "id"}, "id"),
        ({**GOOD, "source": ""}, "source"),
        ({**GOOD, "type": 5}, "type"),
        ({**GOOD, "specversion": "0.3"}, "specversion"),
        ({**GOOD, "subject": 3}, "subject"),
        ({**GOOD, "time": "yesterday"}, "time"),
        ({**GOOD, "Bad-Ext": 1}, "Bad-Ext"),
    ],
)
def test_decode_errors_name_the_field(doc: object, field: str):
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    with pytest.raises(EventError) as info:
        Event.decode(raw)
    assert info.value.field == field
    assert field in str(info.value)


def test_extensions_survive_round_trip():
    e = Event.decode(orjson.dumps({**GOOD, "traceparent": "00-abc", "data": [1]}))
    assert e.extensions == {"traceparent": "00-abc"}
    assert orjson.loads(e.encode())["traceparent"] == "00-abc"


def test_unserializable_data_is_a_clear_error():
    with pytest.raises(EventError) as info:
        Event.create(object()).encode()
    assert info.value.field == "data"


@pytest.mark.parametrize(
    "t", ["2026-11-26", "2026-11-26T07:00:00", "26/11/2026", "2026-13-01T00:00:00Z"]
)
def test_time_must_be_rfc3339(t: str):
    with pytest.raises(EventError) as info:
        Event.decode(orjson.dumps({**GOOD, "time": t}))
    assert info.value.field == "time"


def test_event_without_time_is_stamped_on_arrival_not_1970():
    e = Event.decode(orjson.dumps(GOOD))
    assert e.time[:4] >= "2026"
    assert Event.decode(orjson.dumps({**GOOD, "time": "2026-11-26T07:00:00.5+01:00"})).time


# -- the broker's stamp and the rebuild from stored bytes (package-internal) ----------


def test_stamp_is_in_place_for_a_fresh_event_and_a_copy_otherwise():
    fresh = Event.create({"a": 1})
    assert fresh._stamp("x.y", ("ep", 1)) is fresh
    assert (fresh.subject, fresh.sequence) == ("x.y", "ep-1")
    again = fresh._stamp("x.z", ("ep", 2))  # already stamped: its position was seen
    assert again is not fresh and (again.sequence, fresh.sequence) == ("ep-2", "ep-1")
    encoded = Event.create(1)
    before = encoded.encode()
    copy = encoded._stamp("x.y", ("ep", 3))
    assert copy is not encoded and encoded.encode() is before  # cached bytes stay true
    received = Event.decode(copy.encode())  # carries a sequence from the wire
    assert received._stamp("x.y", ("ep", 4)) is not received


@given(
    data=json_values,
    subject=st.sampled_from(["a", "chat.lobby.msg"]),
    ext=st.dictionaries(st.sampled_from(["trace", "tenant2"]), st.text(max_size=5), max_size=2),
)
def test_restore_rebuilds_the_stamped_event_from_its_bytes(
    data: object, subject: str, ext: dict[str, str]
):
    e = Event(id="i", source="s", type="t", data=data, extensions=ext)._stamp(subject, ("ep", 9))
    raw = e.encode()
    back = Event._restore(raw, subject, ("ep", 9))
    assert back == e and back.encode() is raw and back.extensions == (ext or None)


def test_from_dict_validates_like_decode_and_decode_event_is_the_same():
    from streams import decode_event

    raw = Event.create({"x": 1}, subject="a.b").encode()
    assert decode_event(raw) == Event.decode(raw) == Event.from_dict(orjson.loads(raw))
    with pytest.raises(EventError) as info:
        Event.from_dict({**GOOD, "Bad": 1})
    assert info.value.field == "Bad"

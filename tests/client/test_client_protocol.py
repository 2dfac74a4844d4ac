"""Decoding server messages and tracking the resume position, without sockets."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.client import (
    Control,
    GapNotice,
    RemoteProtocolError,
    ResumeTracker,
    ServerError,
    SseMessage,
    decode_ndjson_line,
    decode_sse_message,
    decode_ws_message,
    subscribe_message,
)
from streams import Event, Position


def ev(seq: str, n: int = 0) -> Event:
    return Event.create({"n": n}, id=f"id{n}").stamped("chat.lobby", seq)


def test_sse_message_decodes_to_the_event() -> None:
    e = ev("k-3")
    got = decode_sse_message(SseMessage(e.encode().decode(), id="k-3"))
    assert got == e and isinstance(got, Event)


def test_gap_notice_in_each_framing() -> None:
    gap = b'{"op":"gap","requested":"a-1","earliest":"b-5","reason":"epoch changed"}'
    want = GapNotice("a-1", "b-5", "epoch changed")
    assert decode_sse_message(SseMessage(gap.decode(), "gap")) == want
    assert decode_ndjson_line(gap) == want
    assert decode_ws_message(gap[:-1] + b',"id":"s1"}') == [
        GapNotice("a-1", "b-5", "epoch changed", "s1")
    ]
    assert want.resume_from == Position("b", 4)
    assert GapNotice("a-1", None).resume_from is None
    assert "continuing from b-5" in str(want)


def test_ndjson_heartbeat_is_none() -> None:
    assert decode_ndjson_line(b"") is None
    assert decode_ndjson_line(b"  ") is None


def test_ws_frame_with_array_and_controls() -> None:
    a, b = ev("k-1", 1), ev("k-2", 2)
    frame = b"[" + a.encode() + b"," + b.encode() + b"]"
    assert decode_ws_message(frame) == [a, b]
    ack = {"op": "ack", "ref": "p1", "position": "k-3"}
    assert decode_ws_message(orjson.dumps(ack)) == [Control("ack", ack)]
    (err,) = decode_ws_message(b'{"op":"error","code":"forbidden","message":"no","ref":"s1"}')
    assert isinstance(err, ServerError)
    assert (err.code, err.status, err.retryable, err.body["ref"]) == (
        "forbidden",
        None,
        False,
        "s1",
    )


@pytest.mark.parametrize(
    "raw",
    [b"{nope", b'{"specversion": "1.0"}', b"[1, 2]", b'"text"'],
    ids=["malformed", "missing-attributes", "not-objects", "string"],
)
def test_bad_server_output_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_ws_message(raw)
    with pytest.raises(RemoteProtocolError):
        decode_ndjson_line(raw)
    with pytest.raises(RemoteProtocolError):
        decode_sse_message(SseMessage(raw.decode()))


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (400, b'{"error":{"code":"bad_subject","message":"bad"}}', "bad_subject", False),
        (503, b'{"error":{"code":"overloaded","message":"full"}}', "overloaded", True),
        (429, b'{"error":{"code":"rate_limited","message":"slow down"}}', "rate_limited", True),
        (502, b"<html>bad gateway</html>", "http_error", True),
        (404, b"", "http_error", False),
    ],
)
def test_server_error_from_http(status: int, body: bytes, code: str, retryable: bool) -> None:
    err = ServerError.from_http(status, body)
    assert (err.status, err.code, err.retryable) == (status, code, retryable)
    assert str(err).startswith(f"HTTP {status} {code}: ")


def test_subscribe_message_fields() -> None:
    msg = orjson.loads(subscribe_message("s1", "a.*", Position("e", 4), {"type": "t"}))
    assert msg == {
        "op": "subscribe",
        "id": "s1",
        "pattern": "a.*",
        "since": "e-4",
        "filter": {"type": "t"},
    }
    assert "since" not in orjson.loads(subscribe_message("s1", ">"))


@given(
    st.integers(1, 60),
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 10)), max_size=8),
)
def test_reconnects_with_overlapping_replays_deliver_each_event_once(
    n: int, drops: list[tuple[int, int]]
) -> None:
    """A server that drops the connection anywhere and replays from a little *before*
    the resume position (at-least-once) still yields each event exactly once, in order."""
    tracker = ResumeTracker()
    delivered: list[int] = []
    cursor = 1
    for drop_at, overlap in [*drops, (n, 0)]:
        start = max(1, cursor - overlap)
        for off in range(start, min(drop_at, n) + 1):
            if tracker.accept(ev(f"e-{off}")):
                delivered.append(off)
        cursor = (tracker.position.offset + 1) if tracker.position else 1
    assert delivered == list(range(1, n + 1))


def test_tracker_starts_from_since_and_jumps_on_gap() -> None:
    t = ResumeTracker("e-5")
    assert not t.accept(ev("e-5")) and t.accept(ev("e-6"))
    t.gap(GapNotice("e-6", "f-3"))
    assert t.position == Position("f", 2)
    assert t.accept(ev("f-3")) and not t.accept(ev("f-3"))
    # events without a position cannot be compared, so they pass
    assert t.accept(Event.create(1)) and t.accept(Event.create(1))
    # an SSE id stands in for a missing sequence
    assert not t.accept(Event.create(1), fallback_id="f-3")

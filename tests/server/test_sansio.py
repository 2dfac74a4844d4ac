"""The sans-I/O modules, tested without sockets."""

from __future__ import annotations

import jwt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.server.auth import AuthConfig, Claims, authorize, covers, token_from, verify_token
from adapters.server.errors import STATUS, ProtocolError
from adapters.server.framing import (
    gap_message,
    ndjson_chunk,
    sse_chunk,
    ws_frame,
    ws_frames,
    ws_payloads,
)
from adapters.server.ingest import parse_body
from adapters.server.limits import TokenBucket
from adapters.server.wsproto import Publish, Subscribe, Unsubscribe, parse_message
from streams import Event, GapError, Position, match

tokens = st.sampled_from(["a", "b", "c"])
pattern_tokens = st.sampled_from(["a", "b", "c", "*"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    toks = draw(st.lists(pattern_tokens, min_size=1, max_size=4))
    if draw(st.booleans()):
        toks.append(">")
    return ".".join(toks)


subjects = st.lists(tokens, min_size=1, max_size=6).map(".".join)


def ev(i: int, subject: str = "a.b") -> Event:
    return Event.create({"i": i}, id=f"id{i}").stamped(subject, f"ep-{i}")


# -- framing ---------------------------------------------------------------------------
def test_sse_chunk_holds_every_event_with_its_position() -> None:
    chunk = sse_chunk([ev(1), ev(2)]).decode()
    blocks = chunk.strip().split("\n\n")
    assert [b.split("\n")[0] for b in blocks] == ["id: ep-1", "id: ep-2"]
    assert orjson.loads(blocks[1].split("\n")[1][len("data: ") :])["data"] == {"i": 2}


def test_sse_gap_is_a_named_event_and_ndjson_gap_a_line() -> None:
    gap = GapError(Position("ep", 1), Position("ep", 5), "events were evicted")
    msg = gap_message(gap, "s1")
    assert sse_chunk([msg]).startswith(b"event: gap\ndata: {")
    lines = ndjson_chunk([msg, ev(5)]).splitlines()
    assert orjson.loads(lines[0]) == {
        "op": "gap",
        "id": "s1",
        "requested": "ep-1",
        "earliest": "ep-5",
        "reason": "events were evicted",
    }
    assert orjson.loads(lines[1])["sequence"] == "ep-5"


def test_ws_payloads_coalesce_events_and_keep_control_messages_in_order() -> None:
    e1, e2, e3, e4 = (ev(i) for i in range(1, 5))
    payloads = ws_payloads([e1, (e2, e3), b'{"op":"ack"}', e4])
    assert [orjson.loads(p) for p in payloads] == [
        [e1.to_dict(), e2.to_dict(), e3.to_dict()],
        {"op": "ack"},
        e4.to_dict(),
    ]


@given(st.integers(0, 70_000))
def test_ws_frame_length_encoding(n: int) -> None:
    frame = ws_frame(b"x" * n)
    assert frame[0] == 0x81
    if n < 126:
        assert frame[1] == n and len(frame) == n + 2
    elif n < 65536:
        assert frame[1] == 126 and int.from_bytes(frame[2:4], "big") == n
    else:
        assert frame[1] == 127 and int.from_bytes(frame[2:10], "big") == n


def test_ws_frames_reuse_cached_event_bytes() -> None:
    e = ev(1)
    cached = e.encode()
    assert ws_frames([e]) == b"\x81" + bytes([126]) + len(cached).to_bytes(2, "big") + cached


# -- ingest ----------------------------------------------------------------------------
def test_ingest_json_value_array_ndjson_and_cloudevents() -> None:
    assert [e.data for e in parse_body(b'{"a": 1}', "application/json")] == [{"a": 1}]
    assert [e.data for e in parse_body(b"[1, 2]", "application/json; charset=utf-8")] == [1, 2]
    nd = parse_body(b'1\n\n{"b": 2}\n', "application/x-ndjson", "t.x")
    assert [(e.data, e.type) for e in nd] == [(1, "t.x"), ({"b": 2}, "t.x")]
    ce = {"specversion": "1.0", "id": "x", "source": "s", "type": "t", "data": 3}
    assert parse_body(orjson.dumps(ce), "application/cloudevents+json")[0].id == "x"
    batch = parse_body(orjson.dumps([ce, ce]), "application/cloudevents-batch+json")
    assert len(batch) == 2


BAD_BODIES = [
    (b"{", "application/json", "bad_json", {}),
    (b"", "application/json", "bad_json", {}),
    (b"[]", "application/json", "bad_json", {}),
    (b'1\n2\n{"x":', "application/x-ndjson", "bad_json", {"line": 3}),
    (
        b'[1, {"specversion": "1.0", "id": "x", "source": "s"}]',
        "application/json",
        "bad_event",
        {"field": "type", "index": 1},
    ),
    (
        b'1\n{"specversion": "0.3", "id": "x", "source": "s", "type": "t"}',
        "application/x-ndjson",
        "bad_event",
        {"field": "specversion", "line": 2},
    ),
    (b'{"data": 1}', "application/cloudevents+json", "bad_event", {"field": "specversion"}),
    (b"{}", "application/cloudevents-batch+json", "bad_json", {}),
    (b"1", "text/plain", "unsupported_media_type", {}),
    (b"1", None, "unsupported_media_type", {}),
]


@pytest.mark.parametrize(("body", "ctype", "code", "details"), BAD_BODIES)
def test_ingest_rejects_bad_bodies_with_documented_codes(
    body: bytes, ctype: str | None, code: str, details: dict[str, object]
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_body(body, ctype)
    assert info.value.code == code
    for k, v in details.items():
        assert info.value.details[k] == v


@given(st.lists(st.integers(-(2**53), 2**53), min_size=1, max_size=20), st.integers(0, 19))
def test_ingest_ndjson_is_all_or_nothing_and_names_the_bad_line(
    values: list[int], bad: int
) -> None:
    lines = [orjson.dumps(v) for v in values]
    assert [e.data for e in parse_body(b"\n".join(lines), "application/x-ndjson")] == values
    if bad < len(lines):
        lines[bad] = b"{oops"
        with pytest.raises(ProtocolError) as info:
            parse_body(b"\n".join(lines), "application/x-ndjson")
        assert info.value.details["line"] == bad + 1


# -- websocket messages ------------------------------------------------------------------
def test_parse_subscribe_unsubscribe_publish() -> None:
    sub = parse_message(
        b'{"op":"subscribe","id":"s","pattern":"a.*","since":"e-3","filter":{"data.k":1}}'
    )
    assert isinstance(sub, Subscribe) and sub.since == Position("e", 3) and sub.filter
    assert sub.filter(Event.create({"k": 1})) and not sub.filter(Event.create({"k": 2}))
    assert parse_message('{"op":"unsubscribe","id":"s"}') == Unsubscribe("s")
    pub = parse_message('{"op":"publish","ref":"r","subject":"a.b","data":{"x":1},"type":"t"}')
    assert isinstance(pub, Publish) and pub.ref == "r" and pub.event.type == "t"


BAD_MESSAGES = [
    ("{", "bad_json", None),
    ("[1]", "bad_json", None),
    ('{"op":"dance","ref":"r1"}', "unknown_op", "r1"),
    ('{"op":"subscribe","pattern":"a"}', "bad_request", None),
    ('{"op":"subscribe","id":"s","pattern":"a..b"}', "bad_subject", "s"),
    ('{"op":"subscribe","id":"s","pattern":"a","since":"nope"}', "bad_position", "s"),
    ('{"op":"subscribe","id":"s","pattern":"a","filter":{"color":1}}', "bad_request", "s"),
    ('{"op":"publish","ref":"p","subject":"a.*","data":1}', "bad_subject", "p"),
    ('{"op":"publish","ref":"p","subject":"a","event":{"id":"x"}}', "bad_event", "p"),
    ('{"op":"unsubscribe"}', "bad_request", None),
]


@pytest.mark.parametrize(("raw", "code", "ref"), BAD_MESSAGES)
def test_bad_ws_messages(raw: str, code: str, ref: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(raw)
    assert info.value.code == code
    answer = orjson.loads(info.value.ws_message())
    assert answer["op"] == "error" and answer["code"] == code and answer.get("ref") == ref


def test_every_error_code_is_documented_in_protocol_md() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "PROTOCOL.md").read_text()
    for code in STATUS:
        assert f"`{code}`" in doc


# -- auth --------------------------------------------------------------------------------
@given(patterns(), patterns(), subjects)
def test_covers_is_sound(allowed: str, requested: str, subject: str) -> None:
    if covers(allowed, requested) and match(requested, subject):
        assert match(allowed, subject)


@given(patterns())
def test_covers_is_reflexive_and_everything_is_under_gt(p: str) -> None:
    assert covers(p, p) and covers(">", p)


KEY = "k" * 32


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_verify_token_cases() -> None:
    cfg = AuthConfig(key=KEY)
    with pytest.raises(ProtocolError, match="required"):
        verify_token(None, cfg)
    with pytest.raises(ProtocolError, match="expired"):
        verify_token(jwt.encode({"exp": 1}, KEY, algorithm="HS256"), cfg)
    with pytest.raises(ProtocolError, match="invalid"):
        verify_token(jwt.encode({}, "other" * 8, algorithm="HS256"), cfg)
    # the algorithm is fixed by configuration, never taken from the token
    with pytest.raises(ProtocolError, match="invalid"):
        verify_token(jwt.encode({}, KEY, algorithm="HS512"), cfg)
    with pytest.raises(ProtocolError, match="invalid"):
        verify_token(jwt.encode({}, None, algorithm="none"), cfg)
    claims = verify_token(jwt.encode({"sub": "u", "publish": "a.>"}, KEY), cfg)
    assert claims == Claims(sub="u", subscribe=(), publish=("a.>",))
    with pytest.raises(ProtocolError) as info:
        authorize(claims, "publish", "b.c")
    assert info.value.code == "forbidden" and info.value.status == 403
    authorize(claims, "publish", "a.b.c")
    assert token_from("Bearer t1", "t2") == "t1"


# -- limits ------------------------------------------------------------------------------
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 5)), max_size=50))
def test_token_bucket_never_exceeds_rate_plus_burst(steps: list[tuple[float, int]]) -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    now = 0.0
    spent = 0
    for dt, n in steps:
        now += dt
        if bucket.take(n, now):
            spent += n
    assert spent <= 5 + 10 * now + 1e-9

"""The sans-I/O SSE parser: spec examples and chunking/line-ending properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.client import SseMessage, SseParser, SseTooLarge


def parse(*chunks: bytes) -> list[SseMessage]:
    p = SseParser()
    out: list[SseMessage] = []
    for c in chunks:
        out.extend(p.feed(c))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# -- examples from the WHATWG spec (section 9.2.5/9.2.6) ------------------------------------
def test_multi_line_data_is_joined_with_lf() -> None:
    assert parse(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [SseMessage("YHOO\n+2\n10")]


def test_spec_example_ids_and_leading_space() -> None:
    stream = (
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n"
    )
    assert parse(stream) == [
        SseMessage("first event", id="1"),
        SseMessage("second event", id=""),
        SseMessage(" third event", id=""),
    ]


def test_empty_data_lines_and_unterminated_message() -> None:
    assert parse(b"data\n\ndata\ndata\n\ndata:") == [SseMessage(""), SseMessage("\n")]


def test_one_space_after_colon_is_optional() -> None:
    assert parse(b"data:test\n\ndata: test\n\n") == [SseMessage("test"), SseMessage("test")]


def test_id_persists_and_event_type_resets() -> None:
    msgs = parse(b"id: a-1\nevent: gap\ndata: x\n\ndata: y\n\nevent: z\n\ndata: w\n\n")
    assert msgs == [
        SseMessage("x", "gap", "a-1"),
        SseMessage("y", "message", "a-1"),
        SseMessage("w", "message", "a-1"),
    ]


def test_id_with_nul_is_ignored_and_retry_needs_digits() -> None:
    p = SseParser()
    assert p.feed(b"id: ok\n\nid: b\x00d\nretry: 1500\nretry: 1.5\ndata: x\n\n") == [
        SseMessage("x", id="ok")
    ]
    assert p.retry == 1500


def test_comments_and_unknown_fields_are_ignored() -> None:
    p = SseParser()
    assert p.feed(b": hb\n\nfoo: bar\ndata: 1\n: mid\n\n") == [SseMessage("1")]
    assert p.comments == 2


def test_only_a_leading_bom_is_dropped() -> None:
    bom = "\ufeff".encode()
    assert parse(bom[:1], bom[1:] + b"data: a\n\n") == [SseMessage("a")]
    # a BOM later in the stream is a character like any other: it makes an unknown field
    assert parse(b"data: a\n\n" + bom + b"data: b\n\n") == [SseMessage("a")]


def test_cr_then_lf_in_the_next_chunk_is_one_line_end() -> None:
    assert parse(b"data: a\r", b"\n\r", b"\n") == [SseMessage("a")]
    assert parse(b"data: a\r", b"\r") == [SseMessage("a")]


def test_oversized_line_or_message_raises() -> None:
    with pytest.raises(SseTooLarge):
        SseParser(max_size=10).feed(b"data: " + b"x" * 20)
    p = SseParser(max_size=10)
    with pytest.raises(SseTooLarge):
        p.feed(b"data: 123456\ndata: 123456\n")


# -- properties ------------------------------------------------------------------------------
_no_eol = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"))
_field_value = _no_eol.filter(lambda s: "\x00" not in s)
_eol = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[SseMessage]]:
    """A stream of messages written with random line endings, comments and a BOM,
    with the messages a conforming parser must produce."""
    out: list[str] = ["\ufeff"] if draw(st.booleans()) else []
    expected: list[SseMessage] = []
    last_id = ""
    for _ in range(draw(st.integers(0, 6))):
        lines: list[str] = []
        if draw(st.booleans()):
            lines.append(":" + draw(_no_eol))
        event = draw(st.none() | _field_value.filter(lambda s: not s.startswith(" ")))
        if event is not None:
            lines.append(f"event: {event}")
        ident = draw(st.none() | _field_value)
        if ident is not None:
            lines.append(f"id: {ident}")
            last_id = ident
        data = draw(st.lists(_no_eol, min_size=1, max_size=4))
        lines.extend(f"data: {d}" for d in data)
        for line in [*lines, ""]:
            eol = draw(_eol)
            if not line and out and out[-1].endswith("\r") and eol == "\n":
                eol = "\r\n"  # CR then LF would be one line end, not two
            out.append(line + eol)
        expected.append(SseMessage("\n".join(data), event or "message", last_id))
    return "".join(out).encode(), expected


@given(sse_streams(), st.lists(st.integers(min_value=0), max_size=12))
def test_messages_survive_any_line_endings_and_chunking(
    stream: tuple[bytes, list[SseMessage]], cuts: list[int]
) -> None:
    raw, expected = stream
    assert parse(raw) == expected
    assert parse(*split(raw, cuts)) == expected


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=12))
def test_arbitrary_bytes_parse_the_same_however_chunked(raw: bytes, cuts: list[int]) -> None:
    whole, chunked = SseParser(), SseParser()
    a = whole.feed(raw)
    b = [m for c in split(raw, cuts) for m in chunked.feed(c)]
    assert a == b
    assert (whole.last_event_id, whole.retry, whole.comments) == (
        chunked.last_event_id,
        chunked.retry,
        chunked.comments,
    )


@given(st.lists(_no_eol.filter(lambda s: "\ufeff" not in s[:1]), min_size=1, max_size=5))
def test_data_lines_round_trip_through_encode_sse(data: list[str]) -> None:
    from adapters.client import encode_sse

    text = "\n".join(data)
    assert parse(encode_sse(text, id="e-1")) == [SseMessage(text, id="e-1")]
    assert not re.search(r"[\r\n]", parse(encode_sse("x", event="gap"))[0].event)

"""NDJSON line splitting and request chunking, without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.client import LineSplitter, LineTooLong, ndjson_chunks


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def expected_lines(data: bytes) -> list[bytes]:
    lines = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
    if lines[-1] == b"":
        lines.pop()  # nothing after the last newline (or a lone CR): no last line
    return lines


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=15))
def test_lines_are_the_same_however_the_stream_is_chunked(data: bytes, cuts: list[int]) -> None:
    s = LineSplitter()
    got = [line for chunk in split(data, cuts) for line in s.feed(chunk)] + s.close()
    assert got == expected_lines(data)


def test_line_too_long_is_refused_before_it_is_complete() -> None:
    s = LineSplitter(max_line=8)
    assert s.feed(b"12345678\n") == [b"12345678"]
    with pytest.raises(LineTooLong):
        s.feed(b"123456789")


_line = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@given(
    st.lists(_line, max_size=40),
    st.integers(min_value=1, max_value=120),
    st.integers(min_value=1, max_value=7),
)
def test_chunks_keep_every_value_in_order_within_limits(
    lines: list[bytes], max_bytes: int, max_lines: int
) -> None:
    file_lines = [line + b"\n" for line in lines]
    chunks = list(ndjson_chunks(file_lines, max_bytes=max_bytes, max_lines=max_lines))
    values = [line for line in lines if line.strip()]
    sent = [line for _, _, body in chunks for line in body.split(b"\n") if line.strip()]
    assert sent == values
    assert sum(count for _, count, _ in chunks) == len(values)
    for first, count, body in chunks:
        assert count <= max_lines
        assert len(body) <= max_bytes or count == 1
        assert body.endswith(b"\n") and body.strip()
        # line k of a body is line first + k - 1 of the file: server errors map back
        for k, line in enumerate(body.split(b"\n")[:-1], 1):
            original = lines[first + k - 2]
            assert line == original if original.strip() else not line.strip()

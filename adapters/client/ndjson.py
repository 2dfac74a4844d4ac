"""Incremental NDJSON framing (sans-I/O): split a byte stream into lines, and cut a
file into request-sized chunks on line boundaries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from streams.errors import ClientError

__all__ = ["LineSplitter", "LineTooLong", "ndjson_chunks"]

DEFAULT_MAX_LINE: Final = 16 * 1024 * 1024


class LineTooLong(ClientError, ValueError):
    """A line grew past ``max_line`` bytes without a newline."""


class LineSplitter:
    """Complete lines from bytes split anywhere; ``\\r\\n`` and ``\\n`` both end a line.

    Empty lines are returned too (on the wire they are heartbeats).

    >>> s = LineSplitter()
    >>> s.feed(b'{"a": 1}\\n{"b"'), s.feed(b': 2}\\r\\n\\n{"c": 3}'), s.close()
    ([b'{"a": 1}'], [b'{"b": 2}', b''], [b'{"c": 3}'])
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """Split ``chunk``; return the lines it completed (without their newline)."""
        if b"\n" not in chunk:
            self._pending += chunk
            self._check(len(self._pending))
            return []
        lines = chunk.split(b"\n")
        if self._pending:
            self._pending += lines[0]
            lines[0] = bytes(self._pending)
        self._pending = bytearray(lines.pop())
        self._check(len(self._pending))
        out = []
        for line in lines:
            self._check(len(line))
            out.append(line[:-1] if line.endswith(b"\r") else line)
        return out

    def close(self) -> list[bytes]:
        """The last line if the stream did not end with a newline."""
        rest, self._pending = bytes(self._pending), bytearray()
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        return [rest] if rest else []

    def _check(self, size: int) -> None:
        if size > self.max_line:
            raise LineTooLong(f"NDJSON line longer than {self.max_line} bytes")


def ndjson_chunks(
    lines: Iterable[bytes], max_bytes: int = 256 * 1024, max_lines: int = 1000
) -> Iterator[tuple[int, int, bytes]]:
    """Group lines into bodies of at most ``max_bytes`` / ``max_lines`` values (a longer
    single line goes alone). Yields ``(first_line_number, value_count, body)``.

    Each body holds consecutive lines of the file from ``first_line_number`` (blank lines
    inside a body are kept, blank lines before it dropped), so line ``k`` of a body is line
    ``first_line_number + k - 1`` of the file: a server's error names the file's line.

    >>> list(ndjson_chunks([b"1\\n", b"\\n", b"2\\n", b"3"], max_lines=2))
    [(1, 2, b'1\\n\\n2\\n'), (4, 1, b'3\\n')]
    """
    body: list[bytes] = []
    size = 0
    count = 0
    first = 0
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            if body:
                body.append(b"\n")
                size += 1
            continue
        if count and (size + len(line) + 1 > max_bytes or count >= max_lines):
            yield first, count, _strip_blank_tail(body)
            body, size, count = [], 0, 0
        if not body:
            first = n
        body.append(line + b"\n")
        size += len(line) + 1
        count += 1
    if count:
        yield first, count, _strip_blank_tail(body)


def _strip_blank_tail(body: list[bytes]) -> bytes:
    while body and body[-1] == b"\n":
        body.pop()
    return b"".join(body)

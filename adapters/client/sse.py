"""An incremental Server-Sent Events parser (sans-I/O), per the WHATWG EventSource spec.

Feed it bytes as they arrive, split anywhere (even inside a UTF-8 character or
between the CR and LF of a CRLF); it returns the complete messages. It never
touches a socket, so the same parser serves any transport and is tested alone.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final

from streams.errors import ClientError

__all__ = ["SseMessage", "SseParser", "SseTooLarge", "encode_sse"]

_EOL: Final = re.compile(r"\r\n|\r|\n")
DEFAULT_MAX_SIZE: Final = 16 * 1024 * 1024


class SseTooLarge(ClientError, ValueError):
    """A line or message grew past the parser's ``max_size`` (characters)."""


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One dispatched message: ``event`` type (``"message"`` by default), ``data``,
    and ``id``, the stream's last event id at dispatch time (it persists across messages)."""

    data: str
    event: str = "message"
    id: str = ""


class SseParser:
    """Turns a byte stream into :class:`SseMessage` objects.

    >>> p = SseParser()
    >>> p.feed(b"id: 7\\r\\ndata: hel")
    []
    >>> p.feed(b"lo\\ndata: world\\n\\n: heartbeat\\n\\n")
    [SseMessage(data='hello\\nworld', event='message', id='7')]
    >>> p.last_event_id, p.comments
    ('7', 1)

    ``retry`` holds the last ``retry:`` value (milliseconds) or ``None``.
    A line or message longer than ``max_size`` characters raises :class:`SseTooLarge`,
    so a faulty server cannot grow the client's memory without bound.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False  # a leading BOM is dropped once
        self._skip_lf = False  # the last chunk ended with CR: a leading LF belongs to it
        self._pending = ""  # an incomplete line
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self._id = ""

    def feed(self, chunk: bytes) -> list[SseMessage]:
        """Parse ``chunk``; return the messages it completed (possibly none)."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text[:1] == "\n":
            text = text[1:]
        self._skip_lf = text.endswith("\r")
        out: list[SseMessage] = []
        pos = 0
        for m in _EOL.finditer(text):
            line = text[pos : m.start()]
            if self._pending:
                line = self._pending + line
                self._pending = ""
            pos = m.end()
            self._line(line, out)
        if pos < len(text):
            self._pending += text[pos:]
            if len(self._pending) + self._size > self.max_size:
                raise SseTooLarge(f"SSE line longer than {self.max_size} characters")
        return out

    def _line(self, line: str, out: list[SseMessage]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == ":":
            self.comments += 1
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(value) + 1
            if self._size > self.max_size:
                raise SseTooLarge(f"SSE message larger than {self.max_size} characters")
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        # any other field is ignored, as the spec says

    def _dispatch(self, out: list[SseMessage]) -> None:
        self.last_event_id = self._id
        if not self._data:
            self._event = ""
            return
        out.append(SseMessage("\n".join(self._data), self._event or "message", self._id))
        self._data = []
        self._size = 0
        self._event = ""


def encode_sse(data: str, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE message as bytes (``data`` may span lines).

    >>> encode_sse("a\\nb", id="e-1")
    b'id: e-1\\ndata: a\\ndata: b\\n\\n'
    """
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.extend(f"data: {part}" for part in _EOL.split(data))
    return ("\n".join(lines) + "\n\n").encode()

"""Wire framing, free of I/O: SSE, NDJSON and WebSocket frames built from cached event bytes.

A client's writer hands everything queued to one of these functions and gets back one
``bytes`` to write. Each event's JSON comes from :meth:`streams.Event.encode` (computed
once per event for every client); these functions only concatenate.

Queued items are either :class:`streams.Event` objects or pre-encoded control messages
(``bytes``, a JSON object with an ``"op"`` key).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

import orjson

from streams import Event, GapError, encode_events

__all__ = [
    "HEARTBEAT_NDJSON",
    "HEARTBEAT_SSE",
    "Item",
    "Segment",
    "count_events",
    "flatten",
    "gap_message",
    "http_chunk",
    "ndjson_chunk",
    "sse_chunk",
    "ws_frame",
    "ws_frames",
    "ws_payloads",
]

HEARTBEAT_SSE: Final = b": hb\n\n"
HEARTBEAT_NDJSON: Final = b"\n"

Segment = tuple[Event, ...]  # events that reached a shared topic in one loop iteration
Item = Event | bytes | Segment


def flatten(items: Sequence[Item]) -> list[Event | bytes]:
    """Expand segments in a batch, keeping order.

    >>> a = Event.create(1, id="a")
    >>> len(flatten([b"{}", (a, a), a]))
    4
    """
    out: list[Event | bytes] = []
    for item in items:
        if isinstance(item, tuple):
            out.extend(item)
        else:
            out.append(item)
    return out


def count_events(item: Item) -> int:
    """Events carried by one queued item (control messages carry none).

    >>> a = Event.create(1, id="a")
    >>> count_events(a), count_events(b"{}"), count_events((a, a))
    (1, 0, 2)
    """
    if isinstance(item, tuple):
        return len(item)
    return 1 if isinstance(item, Event) else 0


def gap_message(gap: GapError, sub_id: str | None = None) -> bytes:
    """The ``{"op": "gap"}`` control message for a resume older than history.

    >>> from streams import Position
    >>> gap_message(GapError(Position("e1", 3), Position("e1", 9), "events were evicted"))
    b'{"op":"gap","requested":"e1-3","earliest":"e1-9","reason":"events were evicted"}'
    """
    msg: dict[str, Any] = {"op": "gap"}
    if sub_id is not None:
        msg["id"] = sub_id
    msg["requested"] = str(gap.requested)
    msg["earliest"] = str(gap.earliest) if gap.earliest is not None else None
    msg["reason"] = gap.reason
    return orjson.dumps(msg)


def sse_chunk(items: Sequence[Item]) -> bytes:
    """Several SSE events in one chunk: ``id:`` is the position, ``data:`` the event JSON.

    A control message becomes a named event (``event: gap``); a heartbeat is a comment.

    >>> e = Event.create({"n": 1}, id="x").stamped("a.b", "e1-5")
    >>> sse_chunk([e]).startswith(b'id: e1-5\\ndata: {"specversion":"1.0"')
    True
    >>> sse_chunk([b'{"op":"gap","earliest":null}'])
    b'event: gap\\ndata: {"op":"gap","earliest":null}\\n\\n'
    """
    parts: list[bytes] = []
    for item in flatten(items):
        if isinstance(item, Event):
            if item.sequence is not None:
                parts.append(b"id: " + item.sequence.encode() + b"\n")
            parts.append(b"data: " + item.encode() + b"\n\n")
        else:
            op = orjson.loads(item).get("op", "message")
            parts.append(b"event: " + str(op).encode() + b"\ndata: " + item + b"\n\n")
    return b"".join(parts)


def ndjson_chunk(items: Sequence[Item]) -> bytes:
    """One line per event (its cached JSON) or control message.

    >>> ndjson_chunk([b'{"op":"gap"}', Event.create(1, id="x")]).count(b"\\n")
    2
    """
    return b"".join([(i.encode() if isinstance(i, Event) else i) + b"\n" for i in flatten(items)])


_PACK1: Final = struct.Struct("!BB").pack
_PACK2: Final = struct.Struct("!BBH").pack
_PACK3: Final = struct.Struct("!BBQ").pack
_TEXT: Final = 0x81  # FIN + text opcode


def http_chunk(body: bytes) -> bytes:
    """``body`` as one HTTP/1.1 chunk (``Transfer-Encoding: chunked``); nothing for an
    empty body, which would end the response.

    >>> http_chunk(b"data: 1\\n\\n")
    b'9\\r\\ndata: 1\\n\\n\\r\\n'
    >>> http_chunk(b"")
    b''
    """
    if not body:
        return b""
    return b"%x\r\n%b\r\n" % (len(body), body)


def ws_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed server-to-client text frame (RFC 6455).

    >>> ws_frame(b"hi")
    b'\\x81\\x02hi'
    >>> ws_frame(b"x" * 200)[:4]
    b'\\x81~\\x00\\xc8'
    """
    n = len(payload)
    if n < 126:
        return _PACK1(_TEXT, n) + payload
    if n < 65536:
        return _PACK2(_TEXT, 126, n) + payload
    return _PACK3(_TEXT, 127, n) + payload


def ws_payloads(items: Sequence[Item]) -> list[bytes]:
    """Message payloads for a batch: each run of events becomes one JSON array
    (a lone event is sent as itself); each control message travels alone.

    >>> a, b = Event.create(1, id="a"), Event.create(2, id="b")
    >>> [p[:2] for p in ws_payloads([a, b, b'{"op":"ack"}', a])]
    [b'[{', b'{"', b'{"']
    """
    out: list[bytes] = []
    run: list[Event] = []
    for item in flatten(items):
        if isinstance(item, Event):
            run.append(item)
            continue
        if run:
            out.append(run[0].encode() if len(run) == 1 else encode_events(run))
            run = []
        out.append(item)
    if run:
        out.append(run[0].encode() if len(run) == 1 else encode_events(run))
    return out


def ws_frames(items: Sequence[Item]) -> bytes:
    """Every frame for a batch, concatenated for one transport write.

    >>> ws_frames([b'{"op":"ack"}'])
    b'\\x81\\x0c{"op":"ack"}'
    """
    return b"".join([ws_frame(p) for p in ws_payloads(items)])

"""The client's side of the wire protocol, free of I/O: decoding what servers send
(events, gap notices, control messages, JSON errors) and tracking the resume position
so that reconnects neither miss nor repeat an event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from streams import Event, EventError, Position, PositionError, resume_point
from streams.errors import ClientError, deprecated_alias

from .sse import SseMessage

__all__ = [
    "RETRYABLE_CODES",
    "RETRYABLE_STATUS",
    "Control",
    "GapNotice",
    "RemoteProtocolError",
    "ResumeTracker",
    "ServerError",
    "decode_ndjson_line",
    "decode_sse_message",
    "decode_ws_message",
    "subscribe_message",
]

RETRYABLE_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
# ``token_expired``: the stream ended at the token's expiry; a reconnect asks the token
# provider for a fresh one.
RETRYABLE_CODES: Final = frozenset({"overloaded", "rate_limited", "token_expired"})


class RemoteProtocolError(ClientError, ValueError):
    """The server sent something the protocol does not allow (a bug on its side).

    Formerly ``adapters.client.ProtocolError``, a name the server's own
    :class:`adapters.server.errors.ProtocolError` also used; that name still imports, but is
    deprecated.
    """


class ServerError(ClientError):
    """An error answered by the server: HTTP status (``None`` on WebSocket), the protocol's
    ``code`` and ``message``, and the whole error object in ``body``.

    >>> e = ServerError.from_http(400, b'{"error": {"code": "bad_json", "message": "line 2: x"}}')
    >>> e.code, e.retryable, str(e)
    ('bad_json', False, 'HTTP 400 bad_json: line 2: x')
    """

    def __init__(
        self, status: int | None, code: str, message: str, body: dict[str, Any] | None = None
    ) -> None:
        where = f"HTTP {status} " if status is not None else ""
        super().__init__(f"{where}{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}
        self.retry_after: float | None = None  # seconds, from an HTTP Retry-After header

    @property
    def retryable(self) -> bool:
        """Worth retrying later (overload, rate limit, a server failure)."""
        return self.status in RETRYABLE_STATUS or self.code in RETRYABLE_CODES

    @classmethod
    def from_http(cls, status: int, body: bytes) -> ServerError:
        """From an HTTP error answer; tolerates bodies that are not the documented JSON."""
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = None
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            return cls(
                status, str(err.get("code", "error")), str(err.get("message", "")), dict(err)
            )
        text = body[:200].decode("utf-8", "replace").strip() or "(empty body)"
        return cls(status, "http_error", text, {})

    @classmethod
    def from_ws(cls, obj: dict[str, Any]) -> ServerError:
        """From a WebSocket ``{"op": "error", ...}`` message."""
        return cls(None, str(obj.get("code", "error")), str(obj.get("message", "")), dict(obj))


@dataclass(frozen=True, slots=True)
class GapNotice:
    """The server could not resume at ``requested``: events up to ``earliest`` are gone.

    The stream continues from ``earliest`` (``None``: nothing retained).
    ``id`` names the WebSocket subscription it concerns.
    """

    requested: str | None
    earliest: str | None
    reason: str = ""
    id: str | None = None

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> GapNotice:
        def opt(key: str) -> str | None:
            v = obj.get(key)
            return None if v is None else str(v)

        return cls(opt("requested"), opt("earliest"), str(obj.get("reason") or ""), opt("id"))

    @property
    def resume_from(self) -> Position | None:
        """The ``since`` that continues with what is retained (:func:`streams.resume_point`)."""
        try:
            earliest = Position.parse(self.earliest) if self.earliest else None
            requested = Position.parse(self.requested) if self.requested else None
        except PositionError:
            return None
        if earliest is None:
            return None
        return resume_point(requested or Position(earliest.epoch, 0), earliest)

    def __str__(self) -> str:
        return (
            f"gap: events after {self.requested} are no longer retained"
            f"{' (' + self.reason + ')' if self.reason else ''}; "
            f"continuing from {self.earliest or 'the live stream'}"
        )


@dataclass(frozen=True, slots=True)
class Control:
    """A WebSocket control message other than a gap or an error (``subscribed``, ``ack``...)."""

    op: str
    body: dict[str, Any] = field(default_factory=dict)


def _event(obj: Any) -> Event:
    """An event as the server sent it; binary data (``data_base64``, which
    :meth:`Event.from_dict` does not know) is kept as that attribute.

    >>> e = _event({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
    ...             "datacontenttype": "image/png", "data_base64": "iVBO"})
    >>> e.data, e.extensions
    (None, {'data_base64': 'iVBO'})
    """
    try:
        if isinstance(obj, dict) and isinstance(obj.get("data_base64"), str):
            rest = {k: v for k, v in obj.items() if k != "data_base64"}
            event = Event.from_dict(rest)
            return event.replace(
                extensions={**(event.extensions or {}), "data_base64": obj["data_base64"]}
            )
        return Event.from_dict(obj)
    except EventError as exc:
        raise RemoteProtocolError(f"server sent an invalid event: {exc}") from None


def _loads(raw: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"server sent malformed JSON in {what}: {exc}") from None


def decode_sse_message(msg: SseMessage) -> Event | GapNotice | ServerError:
    """An SSE message as an event or, for ``event: gap``, a gap notice (``event: error``:
    the error that ends the stream, such as ``token_expired``).

    >>> decode_sse_message(SseMessage('{"op":"gap","requested":"a-1","earliest":"b-1"}', "gap"))
    GapNotice(requested='a-1', earliest='b-1', reason='', id=None)
    >>> decode_sse_message(SseMessage('{"op":"error","code":"token_expired","message":"x"}'))
    ServerError('token_expired: x')
    """
    obj = _loads(msg.data, "an SSE message")
    op = obj.get("op") if isinstance(obj, dict) else None
    if msg.event == "gap" or op == "gap":
        if not isinstance(obj, dict):
            raise RemoteProtocolError("gap notice is not a JSON object")
        return GapNotice.from_dict(obj)
    if isinstance(obj, dict) and op == "error":
        return ServerError.from_ws(obj)
    return _event(obj)


def decode_ndjson_line(line: bytes) -> Event | GapNotice | ServerError | None:
    """An NDJSON line as an event, a gap notice, an error that ends the stream, or
    ``None`` for a blank heartbeat line."""
    if not line.strip():
        return None
    obj = _loads(line, "an NDJSON line")
    op = obj.get("op") if isinstance(obj, dict) else None
    if op == "gap":
        return GapNotice.from_dict(obj)
    if op == "error":
        return ServerError.from_ws(obj)
    return _event(obj)


def decode_ws_message(raw: bytes | str) -> list[Event | GapNotice | ServerError | Control]:
    """A WebSocket frame: one event, a coalesced array of events, or a control message.

    >>> decode_ws_message('{"op": "subscribed", "id": "s1"}')
    [Control(op='subscribed', body={'op': 'subscribed', 'id': 's1'})]
    >>> decode_ws_message('{"op": "error", "code": "bad_subject", "message": "x"}')
    [ServerError('bad_subject: x')]
    """
    obj = _loads(raw, "a WebSocket message")
    items = obj if isinstance(obj, list) else [obj]
    out: list[Event | GapNotice | ServerError | Control] = []
    for item in items:
        op = item.get("op") if isinstance(item, dict) else None
        if op is None:
            out.append(_event(item))
        elif op == "gap":
            out.append(GapNotice.from_dict(item))
        elif op == "error":
            out.append(ServerError.from_ws(item))
        else:
            out.append(Control(str(op), item))
    return out


def subscribe_message(
    id: str, pattern: str, since: Position | str | None = None, filter: dict[str, Any] | None = None
) -> bytes:
    """The JSON of a WebSocket ``subscribe`` request.

    >>> subscribe_message("s1", "chat.>", since="k3-4")
    b'{"op":"subscribe","id":"s1","pattern":"chat.>","since":"k3-4"}'
    """
    msg: dict[str, Any] = {"op": "subscribe", "id": id, "pattern": pattern}
    if since is not None:
        msg["since"] = str(since)
    if filter:
        msg["filter"] = filter
    return orjson.dumps(msg)


class ResumeTracker:
    """Remembers the last position delivered and rejects anything at or before it.

    Positions of one epoch are ordered by offset; an event from another epoch means the
    server's history was reset (it says so with a gap notice) and is accepted.

    >>> t = ResumeTracker()
    >>> e = lambda seq: Event(id="x", source="s", type="t", sequence=seq)
    >>> [t.accept(e(s)) for s in ("k-1", "k-2", "k-2", "k-1", "j-1")]
    [True, True, False, False, True]
    >>> str(t.position), t.duplicates
    ('j-1', 2)
    """

    def __init__(self, since: Position | str | None = None) -> None:
        self.position: Position | None = Position.parse(since) if isinstance(since, str) else since
        self.duplicates = 0

    def accept(self, event: Event, fallback_id: str | None = None) -> bool:
        """Whether ``event`` is new; advances the position if so. ``fallback_id`` (an SSE
        ``id:``) is used when the event carries no ``sequence``."""
        seq = event.sequence or fallback_id
        if not seq:
            return True  # the server gave no position: nothing to compare
        try:
            pos = Position.parse(seq)
        except PositionError:
            return True
        last = self.position
        if last is not None and pos.epoch == last.epoch and pos.offset <= last.offset:
            self.duplicates += 1
            return False
        self.position = pos
        return True

    def gap(self, notice: GapNotice) -> None:
        """After a gap the stream restarts at ``notice.earliest``; resume from there."""
        self.position = notice.resume_from


_DEPRECATED: Final = {"ProtocolError": "RemoteProtocolError"}


def __getattr__(name: str) -> Any:
    """Old names, importable still, with a :class:`DeprecationWarning`."""
    if name in _DEPRECATED:
        return deprecated_alias(__name__, name, globals()[_DEPRECATED[name]])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

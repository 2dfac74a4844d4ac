"""WebSocket client messages, free of I/O: parse and validate ``subscribe``, ``unsubscribe``
and ``publish`` ops into small typed values, or raise :class:`ProtocolError` with the
documented code (the client's ``ref``/``id`` is kept on the error so the answer names it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from streams import (
    Event,
    Position,
    PositionError,
    SubjectError,
    validate_pattern,
    validate_subject,
)
from streams.event import DEFAULT_TYPE

from .errors import ProtocolError
from .ingest import check_deliverable, event_from_dict

__all__ = [
    "Auth",
    "Filter",
    "Publish",
    "Subscribe",
    "Unsubscribe",
    "compile_filter",
    "parse_message",
    "parse_position",
]

MAX_ID: Final = 128
MAX_FILTER_KEYS: Final = 16
_ATTRS: Final = ("type", "source", "subject", "id", "datacontenttype")

Filter = Callable[[Event], bool]


@dataclass(frozen=True)
class Subscribe:
    id: str
    pattern: str
    since: Position | None = None
    filter: Filter | None = None
    overflow: str | None = None  # the policy the client asks for (checked by the app)


@dataclass(frozen=True)
class Unsubscribe:
    id: str


@dataclass(frozen=True)
class Publish:
    ref: str | None
    subject: str
    event: Event


@dataclass(frozen=True)
class Auth:
    """A fresh token for this connection (before the current one expires)."""

    ref: str | None
    token: str = field(repr=False)


Op = Subscribe | Unsubscribe | Publish | Auth
MAX_TOKEN: Final = 16 * 1024

_MISSING = object()


def parse_position(text: object, name: str = "since") -> Position:
    """A position from a wire string, or ``bad_position``.

    >>> parse_position("ab12-7")
    Position(epoch='ab12', offset=7)
    """
    if not isinstance(text, str):
        raise ProtocolError("bad_position", f"{name} must be a position string", field=name)
    try:
        return Position.parse(text)
    except PositionError as exc:
        raise ProtocolError("bad_position", f"{name}: {exc}", field=name) from None


def compile_filter(spec: object, ref: str | None = None) -> Filter | None:
    """A predicate from ``{"type": "chat.message", "data.room": "lobby"}`` (all must equal).

    >>> f = compile_filter({"type": "t", "data.room": "lobby"})
    >>> f(Event.create({"room": "lobby"}, type="t")), f(Event.create({"room": "x"}, type="t"))
    (True, False)
    """
    if spec is None:
        return None
    if not isinstance(spec, dict) or len(spec) > MAX_FILTER_KEYS:
        raise ProtocolError(
            "bad_request",
            f"filter must be an object of at most {MAX_FILTER_KEYS} attribute: value pairs",
            field="filter",
            ref=ref,
        )
    attrs: list[tuple[str, Any]] = []
    data: list[tuple[str, Any]] = []
    for key, value in spec.items():
        name, in_data = _filter_term(key, value, ref)
        (data if in_data else attrs).append((name, value))
    return _matcher(attrs, data)


def _filter_term(key: str, value: object, ref: str | None) -> tuple[str, bool]:
    """One ``key: value`` pair of a filter: the attribute or ``data`` key it compares, and
    whether it is in ``data``. Raises :class:`ProtocolError` for anything else."""
    if isinstance(value, dict | list):
        raise ProtocolError(
            "bad_request", f"filter {key!r}: values are JSON scalars", field="filter", ref=ref
        )
    if key in _ATTRS:
        return key, False
    if key.startswith("data.") and len(key) > 5:
        return key[5:], True
    raise ProtocolError(
        "bad_request",
        f"filter key {key!r}: use one of {', '.join(_ATTRS)} or data.<key>",
        field="filter",
        ref=ref,
    )


def _matcher(attrs: list[tuple[str, Any]], data: list[tuple[str, Any]]) -> Filter:
    """The predicate of a compiled filter: every attribute and ``data`` key equals its value
    (an event whose ``data`` is not an object matches no ``data.`` term)."""

    def predicate(event: Event) -> bool:
        for name, want in attrs:
            if getattr(event, name) != want:
                return False
        if data:
            body = event.data
            if not isinstance(body, Mapping):
                return False
            for name, want in data:
                if body.get(name, _MISSING) != want:
                    return False
        return True

    return predicate


def _id(msg: dict[str, Any], key: str, ref: str | None, required: bool) -> str | None:
    value = msg.get(key)
    if value is None:
        if required:
            raise ProtocolError("bad_request", f"{key!r} is required", field=key, ref=ref)
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise ProtocolError(
            "bad_request",
            f"{key!r} must be a string of 1 to {MAX_ID} characters",
            field=key,
            ref=ref,
        )
    return value


def parse_message(raw: bytes | str) -> Op:
    """Parse one client text message.

    >>> parse_message('{"op": "subscribe", "id": "s1", "pattern": "chat.>"}')
    Subscribe(id='s1', pattern='chat.>', since=None, filter=None, overflow=None)
    >>> parse_message('{"op": "dance"}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adapters.server.errors.ProtocolError: op 'dance' is not one of subscribe, ..., auth
    """
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"malformed JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_json", "a message must be a JSON object with an 'op'")
    raw_ref = msg.get("ref", msg.get("id"))
    # echoed in errors only when it is a valid id (never an arbitrary client string)
    ref = raw_ref if isinstance(raw_ref, str) and 0 < len(raw_ref) <= MAX_ID else None
    op = msg.get("op")
    parse = _PARSERS.get(op) if isinstance(op, str) else None
    if parse is None:
        raise ProtocolError(
            "unknown_op", f"op {_shown(op)} is not one of {', '.join(OPS)}", ref=ref
        )
    return parse(msg, ref)


def _subscribe(msg: dict[str, Any], ref: str | None) -> Subscribe:
    sid = _id(msg, "id", ref, required=True)
    assert sid is not None
    try:
        pattern = validate_pattern(msg.get("pattern"))
    except SubjectError as exc:
        raise ProtocolError("bad_subject", str(exc), field="pattern", ref=ref) from None
    since_raw = msg.get("since")
    since = None
    if since_raw is not None:
        try:
            since = parse_position(since_raw)
        except ProtocolError as exc:
            exc.ref = ref  # shared validators do not know which message they check
            raise
    overflow = msg.get("overflow")
    if overflow is not None and not isinstance(overflow, str):
        raise ProtocolError(
            "bad_request", "overflow must be a policy name", field="overflow", ref=ref
        )
    return Subscribe(sid, pattern, since, compile_filter(msg.get("filter"), ref), overflow)


def _unsubscribe(msg: dict[str, Any], ref: str | None) -> Unsubscribe:
    sid = _id(msg, "id", ref, required=True)
    assert sid is not None
    return Unsubscribe(sid)


def _publish(msg: dict[str, Any], ref: str | None) -> Publish:
    pref = _id(msg, "ref", ref, required=False)
    try:
        subject = validate_subject(msg.get("subject"))
    except SubjectError as exc:
        raise ProtocolError("bad_subject", str(exc), field="subject", ref=ref) from None
    return Publish(pref, subject, check_deliverable(_published_event(msg, ref), ref))


def _published_event(msg: dict[str, Any], ref: str | None) -> Event:
    """A publish's event: a whole CloudEvent under ``event``, else ``data`` and ``type``."""
    if "event" in msg:
        try:
            return event_from_dict(msg["event"], {})
        except ProtocolError as exc:
            exc.ref = ref  # shared validators do not know which message they check
            raise
    type_ = msg.get("type", DEFAULT_TYPE)
    if not isinstance(type_, str) or not type_ or len(type_) > 256:
        raise ProtocolError("bad_event", "type must be 1 to 256 characters", field="type", ref=ref)
    return Event.create(msg.get("data"), type=type_)


def _auth(msg: dict[str, Any], ref: str | None) -> Auth:
    aref = _id(msg, "ref", ref, required=False)
    token = msg.get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise ProtocolError(
            "bad_request",
            f"'token' must be a string of 1 to {MAX_TOKEN} characters",
            field="token",
            ref=ref,
        )
    return Auth(aref, token)


_PARSERS: Final[dict[str, Callable[[dict[str, Any], str | None], Op]]] = {
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "publish": _publish,
    "auth": _auth,
}


OPS: Final = ("subscribe", "unsubscribe", "publish", "auth")


def _shown(op: object) -> str:
    """The client's ``op`` for an error message, cut short.

    >>> _shown("x" * 100)[-5:], _shown(None)
    ("...'", 'None')
    """
    text = repr(op)
    return text if len(text) <= 40 else text[:36] + "...'"

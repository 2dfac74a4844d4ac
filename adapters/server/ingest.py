"""Ingest body parsing, free of I/O: JSON, NDJSON and CloudEvents into validated events.

All-or-nothing: :func:`parse_body` validates every item before returning any, so the
shell publishes a batch whole or answers an error and publishes nothing.

CloudEvents over HTTP, both content modes of the HTTP protocol binding: *structured* (the
event as ``application/cloudevents+json``, binary data in ``data_base64``) and *binary*
(:func:`binary_event`: the attributes in ``ce-*`` headers, the body, of any content type,
is the data). Binary data is kept as ``data_base64`` in the stored JSON, so it round-trips.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import unquote

import orjson

from streams import Event, EventError
from streams.event import DEFAULT_TYPE

from .errors import ProtocolError

__all__ = [
    "JSON_TYPES",
    "MAX_DEPTH",
    "binary_attributes",
    "binary_event",
    "check_deliverable",
    "check_media_type",
    "event_from_dict",
    "media_type",
    "parse_body",
]

JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"
CE: Final = "application/cloudevents+json"
CE_BATCH: Final = "application/cloudevents-batch+json"
JSON_TYPES: Final = (JSON, NDJSON, CE, CE_BATCH)
_ALIASES: Final = {"application/jsonl": NDJSON, "application/ndjson": NDJSON}
#: orjson reads JSON nested up to 1,024 levels but writes at most 254: an event (itself one
#: level) whose ``data`` or extension attributes nest deeper could be stored and never sent.
MAX_DEPTH: Final = 254


def _depth_over(value: Any, limit: int) -> bool:
    """True if ``value`` nests more than ``limit`` arrays/objects (iterative: no recursion).

    >>> _depth_over([[1]], 2), _depth_over([[1]], 1), _depth_over({"a": [{}]}, 3)
    (False, True, False)
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return False


def check_deliverable(event: Event, ref: str | None = None, **where: Any) -> Event:
    """Refuse (``bad_event``) an event the server could store but never write back.

    >>> deep = [1]
    >>> for _ in range(300):
    ...     deep = [deep]
    >>> check_deliverable(Event.create(deep))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adapters.server.errors.ProtocolError: data: JSON nested deeper than 253 levels ...
    """
    inner = MAX_DEPTH - 1  # the event object is the first level
    fields = {"data": event.data, **(event.extensions or {})}
    for name, value in fields.items():
        if isinstance(value, dict | list) and _depth_over(value, inner):
            raise ProtocolError(
                "bad_event",
                f"{_at(where)}{name}: JSON nested deeper than {inner} levels cannot be "
                f"delivered (an event is at most {MAX_DEPTH} levels deep)",
                field=name,
                ref=ref,
                **where,
            )
    return event


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a ``Content-Type`` header.

    >>> media_type("Application/JSON; charset=utf-8")
    'application/json'
    """
    bare = (content_type or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(bare, bare)


def check_media_type(kind: str) -> None:
    """Raise ``unsupported_media_type`` unless ``kind`` is an ingest type (checked before
    the body is read).

    >>> check_media_type("text/plain")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adapters.server.errors.ProtocolError: Content-Type 'text/plain' is not one of ...
    """
    if kind not in JSON_TYPES:
        raise ProtocolError(
            "unsupported_media_type",
            f"Content-Type {kind or '(none)'!r} is not one of {', '.join(JSON_TYPES)}",
        )


def _plain_from_dict(value: Any, where: dict[str, Any]) -> Event:
    try:
        return Event.from_dict(value)
    except EventError as exc:
        raise ProtocolError("bad_event", f"{_at(where)}{exc}", field=exc.field, **where) from None


def event_from_dict(value: Any, where: dict[str, Any]) -> Event:
    """A CloudEvent from its JSON form, ``data_base64`` (binary data) included, or
    ``bad_event`` naming the field."""
    if not isinstance(value, dict) or "data_base64" not in value:
        return _plain_from_dict(value, where)
    b64 = value["data_base64"]
    if b64 is None:  # a null attribute is an absent one
        return _plain_from_dict({k: v for k, v in value.items() if k != "data_base64"}, where)
    why = None
    if not isinstance(b64, str) or not _is_base64(b64):
        why = "must be a base64 string"
    elif value.get("data") is not None:
        why = "an event has data or data_base64, not both"
    if why is not None:
        raise ProtocolError(
            "bad_event", f"{_at(where)}data_base64: {why}", field="data_base64", **where
        )
    event = _plain_from_dict({k: v for k, v in value.items() if k != "data_base64"}, where)
    return event.replace(extensions={**(event.extensions or {}), "data_base64": b64})


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _item(value: Any, type_: str, where: dict[str, Any]) -> Event:
    if isinstance(value, dict) and "specversion" in value:
        event = event_from_dict(value, where)
    else:
        event = Event.create(value, type=type_)
    return check_deliverable(event, **where)


def _cloudevent(value: Any, where: dict[str, Any]) -> Event:
    if not isinstance(value, dict):
        raise ProtocolError(
            "bad_event", f"{_at(where)}a CloudEvent must be a JSON object", field="event", **where
        )
    if "specversion" not in value:
        raise ProtocolError(
            "bad_event",
            f"{_at(where)}specversion: required attribute is missing",
            field="specversion",
            **where,
        )
    return _item(value, DEFAULT_TYPE, where)


def _at(where: dict[str, Any]) -> str:
    if "line" in where:
        return f"line {where['line']}: "
    if "index" in where:
        return f"item {where['index']}: "
    return ""


def binary_attributes(headers: Iterable[tuple[str, str]]) -> dict[str, str] | None:
    """The CloudEvent attributes of a binary-mode request (its ``ce-*`` headers,
    percent-decoded), or ``None`` when it has no ``ce-specversion`` (not binary mode).

    >>> binary_attributes([("Ce-Id", "1"), ("ce-specversion", "1.0"), ("ce-source", "a%20b")])
    {'id': '1', 'specversion': '1.0', 'source': 'a b'}
    >>> binary_attributes([("Content-Type", "text/plain")]) is None
    True
    """
    attrs: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        if low.startswith("ce-") and len(low) > 3:
            attrs.setdefault(low[3:], unquote(value))
    return attrs if "specversion" in attrs else None


def _is_json_type(kind: str) -> bool:
    return kind in (JSON, "text/json") or kind.endswith("+json")


def binary_event(attrs: dict[str, str], body: bytes, content_type: str | None) -> Event:
    """The event of a binary-mode request: ``attrs`` from :func:`binary_attributes`, the
    body as ``data`` (JSON types parsed, text as a string, anything else ``data_base64``)
    and ``Content-Type`` as ``datacontenttype``.

    >>> e = binary_event({"specversion": "1.0", "id": "1", "source": "s", "type": "t"},
    ...                  b"hi", "text/plain; charset=utf-8")
    >>> e.data, e.datacontenttype
    ('hi', 'text/plain; charset=utf-8')
    >>> binary_event({"specversion": "1.0", "id": "1", "source": "s", "type": "t"},
    ...              bytes([255, 0]), "application/octet-stream").extensions
    {'data_base64': '/wA='}
    """
    for name in ("data", "data_base64", "datacontenttype"):
        if name in attrs:
            raise ProtocolError("bad_event", f"ce-{name}: not an attribute header", field=name)
    value: dict[str, Any] = dict(attrs)
    kind = media_type(content_type)
    if content_type:
        value["datacontenttype"] = content_type.strip()
    if not body:
        pass  # no data
    elif not kind or _is_json_type(kind):
        try:
            value["data"] = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("bad_json", f"malformed JSON: {exc}") from None
    elif kind.startswith("text/"):
        try:
            value["data"] = body.decode()
        except UnicodeDecodeError:
            value["data_base64"] = base64.b64encode(body).decode()
    else:
        value["data_base64"] = base64.b64encode(body).decode()
    return check_deliverable(event_from_dict(value, {}))


def _loads(body: bytes) -> Any:
    if not body.strip():
        raise ProtocolError("bad_json", "empty body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"malformed JSON: {exc}") from None


def parse_body(body: bytes, content_type: str | None, type_: str = DEFAULT_TYPE) -> list[Event]:
    """Validate an ingest body and return its events (not yet stamped with a subject).

    A JSON object with ``specversion`` is a CloudEvent; any other value becomes the
    ``data`` of a new event of type ``type_``. Raises :class:`ProtocolError`.

    >>> [e.data for e in parse_body(b'[1, {"a": 2}]', "application/json")]
    [1, {'a': 2}]
    >>> parse_body(b'{"x": 1}\\n{"x": 2', "application/x-ndjson")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adapters.server.errors.ProtocolError: line 2: malformed JSON: unexpected end of data: ...
    """
    kind = media_type(content_type)
    check_media_type(kind)
    if not type_ or len(type_) > 256:
        raise ProtocolError("bad_request", "type must be 1 to 256 characters", field="type")
    if kind == JSON:
        return _json_body(body, type_)
    if kind == NDJSON:
        return _ndjson_body(body, type_)
    if kind == CE:
        return [_cloudevent(_loads(body), {})]
    if kind == CE_BATCH:
        return _cloudevents_batch(body)
    check_media_type(kind)
    raise AssertionError("unreachable")


def _json_body(body: bytes, type_: str) -> list[Event]:
    """``application/json``: one value, or an array of values (``index`` in errors)."""
    value = _loads(body)
    if not isinstance(value, list):
        return [_item(value, type_, {})]
    if not value:
        raise ProtocolError("bad_json", "empty array: nothing to publish")
    return [_item(v, type_, {"index": i}) for i, v in enumerate(value)]


def _ndjson_body(body: bytes, type_: str) -> list[Event]:
    """``application/x-ndjson``: one value per line, blank lines skipped (``line`` in
    errors, 1-based)."""
    events: list[Event] = []
    for n, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("bad_json", f"line {n}: malformed JSON: {exc}", line=n) from None
        events.append(_item(value, type_, {"line": n}))
    if not events:
        raise ProtocolError("bad_json", "empty body")
    return events


def _cloudevents_batch(body: bytes) -> list[Event]:
    """``application/cloudevents-batch+json``: a non-empty array of CloudEvents."""
    value = _loads(body)
    if not isinstance(value, list):
        raise ProtocolError("bad_json", "a CloudEvents batch must be a JSON array")
    if not value:
        raise ProtocolError("bad_json", "empty array: nothing to publish")
    return [_cloudevent(v, {"index": i}) for i, v in enumerate(value)]

"""The Event envelope: CloudEvents 1.0 in JSON form, encoded once.

An :class:`Event` is immutable. Its JSON bytes are produced by orjson on first use
and cached, so a broker fanning one event out to a thousand clients, over SSE,
NDJSON and WebSocket alike, serializes it exactly once.
"""

from __future__ import annotations

import itertools
import os
import time as _time
from datetime import UTC, datetime
from typing import Any, Final

import orjson

__all__ = ["SPECVERSION", "Event", "EventError", "decode_event", "encode_events"]

SPECVERSION: Final = "1.0"
DEFAULT_SOURCE: Final = "rxstreams"
DEFAULT_TYPE: Final = "rxstreams.event"
JSON: Final = "application/json"

# Event ids: a random per-process prefix plus a counter. Unique across processes
# without paying for uuid4() on every event.
_ID_PREFIX: Final = os.urandom(6).hex()
_ids = itertools.count(1)

_REQUIRED: Final = ("specversion", "id", "source", "type")
_KNOWN: Final = frozenset(
    ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data")
)


class EventError(ValueError):
    """A malformed event. ``field`` names the offending attribute (or ``"json"``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Event:
    """An immutable CloudEvents 1.0 envelope.

    >>> e = Event.create({"text": "hi"}, subject="chat.lobby.msg", type="chat.message")
    >>> e.subject, e.data
    ('chat.lobby.msg', {'text': 'hi'})
    >>> Event.decode(e.encode()) == e
    True
    """

    __slots__ = (
        "_json",
        "_time",
        "_ts",
        "data",
        "datacontenttype",
        "extensions",
        "id",
        "sequence",
        "source",
        "subject",
        "type",
    )

    id: str
    source: str
    type: str
    subject: str | None
    datacontenttype: str
    data: Any
    sequence: str | None
    extensions: dict[str, Any] | None
    _ts: float
    _time: str | None
    _json: bytes | None

    def __init__(
        self,
        *,
        id: str,
        source: str,
        type: str,
        subject: str | None = None,
        time: str | None = None,
        datacontenttype: str = JSON,
        data: Any = None,
        sequence: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        s = object.__setattr__
        s(self, "id", id)
        s(self, "source", source)
        s(self, "type", type)
        s(self, "subject", subject)
        s(self, "datacontenttype", datacontenttype)
        s(self, "data", data)
        s(self, "sequence", sequence)
        s(self, "extensions", extensions or None)
        s(self, "_ts", 0.0)
        s(self, "_time", time)
        s(self, "_json", None)

    @classmethod
    def create(
        cls,
        data: Any = None,
        *,
        subject: str | None = None,
        type: str = DEFAULT_TYPE,
        source: str = DEFAULT_SOURCE,
        id: str | None = None,
        datacontenttype: str = JSON,
    ) -> Event:
        """Make a new event with a fresh id and the current time (formatted lazily)."""
        e = object.__new__(cls)
        s = object.__setattr__
        s(e, "id", id if id is not None else f"{_ID_PREFIX}-{next(_ids)}")
        s(e, "source", source)
        s(e, "type", type)
        s(e, "subject", subject)
        s(e, "datacontenttype", datacontenttype)
        s(e, "data", data)
        s(e, "sequence", None)
        s(e, "extensions", None)
        s(e, "_ts", _time.time())
        s(e, "_time", None)
        s(e, "_json", None)
        return e

    # -- immutability -------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Event is immutable; use Event.replace() to change {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Event is immutable")

    @property
    def time(self) -> str:
        """RFC 3339 timestamp, formatted on first access."""
        t = self._time
        if t is None:
            t = _rfc3339(self._ts)
            object.__setattr__(self, "_time", t)
        return t

    def replace(self, **changes: Any) -> Event:
        """A copy with some attributes changed (the encoded bytes are not carried over)."""
        fields = self.to_dict(include_data=True)
        fields.pop("specversion")
        ext = {k: fields.pop(k) for k in list(fields) if k not in _KNOWN and k != "sequence"}
        fields.update(changes)
        if ext and "extensions" not in changes:
            fields["extensions"] = ext
        return Event(**fields)

    def stamped(self, subject: str, sequence: str) -> Event:
        """A copy with the broker's subject and position; cheap, used on every publish."""
        e = object.__new__(Event)
        s = object.__setattr__
        s(e, "id", self.id)
        s(e, "source", self.source)
        s(e, "type", self.type)
        s(e, "subject", subject)
        s(e, "datacontenttype", self.datacontenttype)
        s(e, "data", self.data)
        s(e, "sequence", sequence)
        s(e, "extensions", self.extensions)
        s(e, "_ts", self._ts)
        s(e, "_time", self._time)
        s(e, "_json", None)
        return e

    # -- encoding -----------------------------------------------------------------
    def to_dict(self, include_data: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        if self.subject is not None:
            d["subject"] = self.subject
        d["time"] = self.time
        d["datacontenttype"] = self.datacontenttype
        if self.sequence is not None:
            d["sequence"] = self.sequence
        if self.extensions:
            d.update(self.extensions)
        if include_data:
            d["data"] = self.data
        return d

    def encode(self) -> bytes:
        """The event as compact JSON bytes; computed once, then cached."""
        j = self._json
        if j is None:
            try:
                j = orjson.dumps(self.to_dict())
            except TypeError as exc:
                raise EventError("data", f"not JSON-serializable: {exc}") from None
            object.__setattr__(self, "_json", j)
        return j

    @property
    def size(self) -> int:
        """Encoded size in bytes."""
        return len(self.encode())

    @classmethod
    def decode(cls, raw: bytes | bytearray | memoryview | str) -> Event:
        """Parse and validate one JSON-encoded event. Raises :class:`EventError`."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EventError("json", f"malformed JSON: {exc}") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Event:
        """Validate a CloudEvents JSON object. Raises :class:`EventError` naming the field."""
        if not isinstance(obj, dict):
            raise EventError("event", f"expected a JSON object, got {type(obj).__name__}")
        for name in _REQUIRED:
            value = obj.get(name)
            if value is None:
                raise EventError(name, "required attribute is missing")
            if not isinstance(value, str) or not value:
                raise EventError(name, "must be a non-empty string")
        if obj["specversion"] != SPECVERSION:
            raise EventError("specversion", f"unsupported {obj['specversion']!r}, expected '1.0'")
        for name in ("subject", "time", "datacontenttype", "sequence"):
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise EventError(name, "must be a string")
        t = obj.get("time")
        if t is not None:
            try:
                datetime.fromisoformat(t.replace("Z", "+00:00"))
            except ValueError:
                raise EventError("time", f"not an RFC 3339 timestamp: {t!r}") from None
        ext = {k: v for k, v in obj.items() if k not in _KNOWN and k != "sequence"}
        for k in ext:
            if not (k.isascii() and k.isalnum() and k.islower()) or len(k) > 20:
                raise EventError(k, "extension names are lowercase letters and digits")
        return cls(
            id=obj["id"],
            source=obj["source"],
            type=obj["type"],
            subject=obj.get("subject"),
            time=t,
            datacontenttype=obj.get("datacontenttype") or JSON,
            data=obj.get("data"),
            sequence=obj.get("sequence"),
            extensions=ext or None,
        )

    # -- value semantics ----------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.id, self.source, self.sequence))

    def __repr__(self) -> str:
        return (
            f"Event(id={self.id!r}, type={self.type!r}, subject={self.subject!r}, "
            f"sequence={self.sequence!r}, data={self.data!r})"
        )


def decode_event(raw: bytes | str) -> Event:
    """Module-level alias of :meth:`Event.decode`."""
    return Event.decode(raw)


def encode_events(events: list[Event]) -> bytes:
    """A JSON array of events built from each event's cached bytes (no re-encoding)."""
    return b"[" + b",".join([e.encode() for e in events]) + b"]"

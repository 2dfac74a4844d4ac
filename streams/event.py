"""The Event envelope: CloudEvents 1.0 in JSON form, encoded once.

An :class:`Event` is immutable. Its JSON bytes are produced by orjson on first use
and cached, so a broker fanning one event out to a thousand clients, over SSE,
NDJSON and WebSocket alike, serializes it exactly once.
"""

from __future__ import annotations

import itertools
import os
import re
import time as _time
from collections.abc import Callable
from datetime import datetime
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

_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)
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


_second_cache: list[Any] = [-1, ""]


def _rfc3339(ts: float) -> str:
    """UTC RFC 3339 with microseconds; the date-and-second part is cached per second."""
    sec = int(ts)
    if _second_cache[0] != sec:
        _second_cache[0] = sec
        _second_cache[1] = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(sec))
    return f"{_second_cache[1]}.{int((ts - sec) * 1e6):06d}Z"


class _Slots:
    """Event's storage, without the immutability guard: constructors fill it, then
    switch the instance's class to :class:`Event` (much cheaper than per-field
    ``object.__setattr__``)."""

    __slots__ = (
        "_json",
        "_pos",
        "_seq",
        "_time",
        "_ts",
        "data",
        "datacontenttype",
        "extensions",
        "id",
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
    extensions: dict[str, Any] | None
    _ts: float
    _time: str | None
    _json: bytes | None
    _seq: str | None
    _pos: tuple[str, int] | None  # (epoch, offset) set by a broker; formatted lazily


_new_slots = _Slots.__new__


# Slot setters that bypass Event's guard: for lazily filled caches, and for a broker
# stamping a never-published event with its subject and position in place.
def _setter(name: str) -> Callable[[Any, Any], None]:
    setter: Callable[[Any, Any], None] = vars(_Slots)[name].__set__
    return setter


_set_json = _setter("_json")
_set_time = _setter("_time")
_set_seq = _setter("_seq")
set_subject_in_place = _setter("subject")
set_position_in_place = _set_position = _setter("_pos")


def _build(
    id: str,
    source: str,
    type: str,
    subject: str | None,
    datacontenttype: str,
    data: Any,
    extensions: dict[str, Any] | None,
    time: str | None,
    ts: float = 0.0,
) -> Event:
    """Fill the slots, then switch the class to the guarded :class:`Event`."""
    e = _new_slots(_Slots)
    e.id = id
    e.source = source
    e.type = type
    e.subject = subject
    e.datacontenttype = datacontenttype
    e.data = data
    e.extensions = extensions
    e._ts = ts
    e._time = time
    e._seq = None
    e._pos = None
    e._json = None
    e.__class__ = Event
    return e  # type: ignore[return-value]


class Event(_Slots):
    """An immutable CloudEvents 1.0 envelope.

    >>> e = Event.create({"text": "hi"}, subject="chat.lobby.msg", type="chat.message")
    >>> e.subject, e.data
    ('chat.lobby.msg', {'text': 'hi'})
    >>> Event.decode(e.encode()) == e
    True
    """

    __slots__ = ()

    def __new__(
        cls,
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
    ) -> Event:
        # No ``time`` given (it is optional in CloudEvents): stamp when we first saw it.
        ts = _time.time() if time is None else 0.0
        e = _build(id, source, type, subject, datacontenttype, data, extensions or None, time, ts)
        if sequence is not None:
            _set_seq(e, sequence)
        return e

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
        return _build(
            id if id is not None else f"{_ID_PREFIX}-{next(_ids)}",
            source,
            type,
            subject,
            datacontenttype,
            data,
            None,
            None,
            _time.time(),
        )

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
            _set_time(self, t)
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

    @property
    def sequence(self) -> str | None:
        """The broker position, ``"<epoch>-<offset>"`` (``None`` before publishing)."""
        seq = self._seq
        if seq is None and self._pos is not None:
            seq = f"{self._pos[0]}-{self._pos[1]}"
            _set_seq(self, seq)
        return seq

    def stamped(self, subject: str, sequence: str | tuple[str, int]) -> Event:
        """A copy with the broker's subject and position (a string or an (epoch, offset))."""
        e = _build(
            self.id,
            self.source,
            self.type,
            subject,
            self.datacontenttype,
            self.data,
            self.extensions,
            self._time,
            self._ts,
        )
        if isinstance(sequence, str):
            _set_seq(e, sequence)
        else:
            _set_position(e, sequence)
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
            # orjson hands back its whole working buffer (4 KiB at least) as the bytes
            # object; the cache keeps an exact-size copy, or every retained event that
            # was ever encoded would hold 4 KiB (benchmarks/broker.py reports the bytes).
            j = b"".join((j, b""))
            _set_json(self, j)
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
                if not _RFC3339.fullmatch(t):
                    raise ValueError
                datetime.fromisoformat(t.upper().replace("Z", "+00:00"))
            except ValueError:
                raise EventError("time", f"not an RFC 3339 timestamp: {t!r}") from None
        ext = {k: v for k, v in obj.items() if k not in _KNOWN and k != "sequence"}
        for k in ext:
            if k == "data_base64":  # binary data in the JSON format: kept as it came
                if not isinstance(ext[k], str):
                    raise EventError(k, "must be a base64 string")
                continue
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

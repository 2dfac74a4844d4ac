"""The Event envelope: CloudEvents 1.0 in JSON form, encoded once.

An :class:`Event` is immutable. Its JSON bytes are produced by orjson on first use
and cached, so a broker fanning one event out to a thousand clients, over SSE,
NDJSON and WebSocket alike, serializes it exactly once.

Events are made in one place, :func:`_build`; every public way in (``Event(...)``,
:meth:`Event.create`, :meth:`Event.decode`/:meth:`Event.from_dict`,
:meth:`Event.replace`, :meth:`Event.stamped`) goes through it. A broker stamps an event
with its subject and position through one package-internal method, ``Event._stamp``;
the broker's log inlines its in-place case (see the slot machinery below).
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import time as _time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import orjson

from .errors import InvalidInput

__all__ = [
    "EVENT_ATTRIBUTES",
    "SPECVERSION",
    "Event",
    "EventError",
    "decode_event",
    "encode_events",
]

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
_OPTIONAL_STRINGS: Final = ("subject", "time", "datacontenttype", "sequence")
# The attributes of a stored event that are not extensions ("sequence" is the broker's,
# carried on the wire); a stored event with other keys carries extensions.
EVENT_ATTRIBUTES: Final = frozenset(
    (
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "data",
        "sequence",
    )
)


class EventError(InvalidInput):
    """A malformed event. ``field`` names the offending attribute (or ``"json"``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@functools.lru_cache(maxsize=4)
def _utc_second(sec: int) -> str:
    """The date-and-second part of a timestamp: formatted once per second, not per event."""
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(sec))


def _rfc3339(ts: float) -> str:
    """UTC RFC 3339 with microseconds."""
    sec = int(ts)
    return f"{_utc_second(sec)}.{int((ts - sec) * 1e6):06d}Z"


# -- slot machinery (private) ---------------------------------------------------------
# Why: an Event is made for every message, so construction is on every hot path.
# Setting slots through ``object.__setattr__`` (what a frozen dataclass does) is slow:
# ``benchmarks/event.py`` measures ``Event.create`` at ~0.6x the time of a frozen
# slotted dataclass with fewer fields. So the storage lives in ``_Slots`` (no guard);
# :func:`_build` fills a ``_Slots`` instance with plain stores and then switches its
# class to :class:`Event`, which adds only the immutability guard and no storage
# (``__slots__ = ()``), so the layouts are identical.
# Later writes (lazily filled caches, the broker's stamp) go through the slot
# descriptors below, which bypass the guard. Only this module writes a slot, with one
# exception: ``EventLog.append``/``extend`` (streams.eventlog) stamp a fresh event in
# place with ``_set_subject``/``_set_pos``, the same test and stores as ``Event._stamp``
# inlined, because a Python call there is ~3% of a publish (callgrind). Keep the two
# in step.


class _Slots:
    """Event's storage, without the immutability guard."""

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
    _ts: float  # when first seen, while ``_time`` is not formatted yet
    _time: str | None  # RFC 3339, formatted lazily from ``_ts``
    _json: bytes | None  # the encoding, cached
    _seq: str | None  # "<epoch>-<offset>": as received, or formatted lazily from ``_pos``
    _pos: tuple[str, int] | None  # (epoch, offset) stamped by a broker


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    setter: Callable[[Any, Any], None] = vars(_Slots)[name].__set__
    return setter


_new_slots = _Slots.__new__
_set_json = _slot_setter("_json")
_set_time = _slot_setter("_time")
_set_seq = _slot_setter("_seq")
_set_subject = _slot_setter("subject")
_set_pos = _slot_setter("_pos")
_NO_TS: Final = 0.0  # one shared float for events whose time was given


def _build(
    id: str,
    source: str,
    type: str,
    subject: str | None,
    datacontenttype: str,
    data: Any,
    extensions: dict[str, Any] | None,
    time: str | None,
    ts: float = _NO_TS,
    seq: str | None = None,
) -> Event:
    """The one way an Event is made: fill the slots, then switch the class to Event."""
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
    e._seq = seq
    e._pos = None
    e._json = None
    e.__class__ = Event
    return e  # type: ignore[return-value]


# -- validation (Event.from_dict) ------------------------------------------------------


def _check_required(obj: dict[str, Any]) -> None:
    for name in _REQUIRED:
        value = obj.get(name)
        if value is None:
            raise EventError(name, "required attribute is missing")
        if not isinstance(value, str) or not value:
            raise EventError(name, "must be a non-empty string")
    if obj["specversion"] != SPECVERSION:
        raise EventError("specversion", f"unsupported {obj['specversion']!r}, expected '1.0'")
    for name in _OPTIONAL_STRINGS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise EventError(name, "must be a string")


def _extensions(obj: dict[str, Any]) -> dict[str, Any] | None:
    ext = {k: v for k, v in obj.items() if k not in EVENT_ATTRIBUTES}
    for k, v in ext.items():
        if k == "data_base64":  # binary data in the JSON format: kept as it came
            if not isinstance(v, str):
                raise EventError(k, "must be a base64 string")
        elif not (k.isascii() and k.isalnum() and k.islower()) or len(k) > 20:
            raise EventError(k, "extension names are lowercase letters and digits")
    return ext or None


def _unchecked_extensions(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in EVENT_ATTRIBUTES}


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
        ts = _time.time() if time is None else _NO_TS
        ext = extensions or None
        return _build(id, source, type, subject, datacontenttype, data, ext, time, ts, sequence)

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
        ext = {k: fields.pop(k) for k in list(fields) if k not in EVENT_ATTRIBUTES}
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
        seq = sequence if isinstance(sequence, str) else None
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
            seq,
        )
        if seq is None:
            _set_pos(e, sequence)
        return e

    def _stamp(self, subject: str, position: tuple[str, int]) -> Event:
        """Package-internal: the broker's one stamping step; returns the stamped event.

        An event never stamped and never encoded is stamped in place: nobody can have
        seen its position or bytes, and publishing it must not cost a copy. Any other
        event gets a stamped copy (its bytes or position belong to another publish).
        ``subject`` is stored as given, so a broker passes its one interned copy.
        """
        if self._pos is None and self._seq is None and self._json is None:
            if self.subject is not subject:
                _set_subject(self, subject)
            _set_pos(self, position)
            return self
        return self.stamped(subject, position)

    @classmethod
    def _restore(cls, raw: bytes, subject: str, position: tuple[str, int]) -> Event:
        """Package-internal: the event a broker stamped and encoded as ``raw``, rebuilt.

        Trusted input (this module wrote it), so nothing is validated again; ``raw``
        stays the cached encoding, so sending the event on costs no re-encoding.
        """
        obj = orjson.loads(raw)
        # Not _extensions(obj): the names were never validated when the event was made
        # with ``Event(extensions=...)``, and history must give back what was published.
        ext = None if obj.keys() <= EVENT_ATTRIBUTES else _unchecked_extensions(obj)
        e = _build(
            obj["id"],
            obj["source"],
            obj["type"],
            subject,
            obj["datacontenttype"],
            obj.get("data"),
            ext,
            obj["time"],
        )
        _set_pos(e, position)
        _set_json(e, raw)
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
        """Encoded size in bytes (what ``len(event.encode())`` gives)."""
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
        _check_required(obj)
        t = obj.get("time")
        if t is not None:
            try:
                if not _RFC3339.fullmatch(t):
                    raise ValueError
                datetime.fromisoformat(t.upper().replace("Z", "+00:00"))
            except ValueError:
                raise EventError("time", f"not an RFC 3339 timestamp: {t!r}") from None
        # Most events carry no extension: a C-level key check spares building the dict.
        ext = None if obj.keys() <= EVENT_ATTRIBUTES else _extensions(obj)
        return _build(
            obj["id"],
            obj["source"],
            obj["type"],
            obj.get("subject"),
            obj.get("datacontenttype") or JSON,
            obj.get("data"),
            ext,
            t,
            _time.time() if t is None else _NO_TS,
            obj.get("sequence"),
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


#: The same as :meth:`Event.decode` (an alias kept for existing imports).
decode_event = Event.decode


def encode_events(events: list[Event]) -> bytes:
    """A JSON array of events built from each event's cached bytes (no re-encoding)."""
    return b"[" + b",".join([e.encode() for e in events]) + b"]"


# -- deprecated: stamping from outside the package --------------------------------------
# ``adapters/brokers/foreign.py`` stamps events it has just built. Kept working; new code
# passes ``subject=`` and ``sequence=`` to ``Event(...)`` or uses :meth:`Event.stamped`.


def set_subject_in_place(event: Event, subject: str) -> None:
    """Deprecated: pass ``subject=`` to ``Event(...)`` instead."""
    _set_subject(event, subject)


def set_position_in_place(event: Event, position: tuple[str, int]) -> None:
    """Deprecated: pass ``sequence=`` to ``Event(...)`` instead, or use :meth:`Event.stamped`."""
    _set_pos(event, position)

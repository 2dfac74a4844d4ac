"""What a subscriber gets from a log entry, whoever wrote it (sans-I/O).

NATS and Redis streams are shared: other services publish into them with plain nats-py,
redis-py or ``redis-cli``. A subscription never ends because of what another producer
wrote. Every entry becomes an event, or is skipped, logged and counted:

- a CloudEvents 1.0 JSON object (what rxstreams itself stores): that event;
- any other JSON value: an event whose ``data`` is that value, ``type``
  :data:`EXTERNAL_TYPE`, ``source`` the broker and stream (``nats://S``, ``redis://S``),
  ``id`` the producer's message id (``Nats-Msg-Id``) or else the position, and ``time``
  the broker's own timestamp for the entry;
- UTF-8 text that is not JSON: the same, with the text as ``data`` and
  ``datacontenttype`` ``text/plain``;
- bytes that are not UTF-8, an entry without a subject or with one that is not a valid
  subject, JSON that cannot be written back (nested deeper than orjson writes): skipped
  with :class:`UnreadableEntry`, which the broker logs and counts (:class:`SkippedEntries`,
  ``rxstreams_broker_entries_skipped_total`` in ``/metrics``).

>>> from streams import Position
>>> e = read_entry(b'{"amount": 6}', "ext.plain", Position("ep", 7), source="nats://S")
>>> e.type, e.data, e.subject, e.sequence, e.id
('io.rxstreams.external', {'amount': 6}, 'ext.plain', 'ep-7', 'nats://S/ep-7')
>>> read_entry(b"\\xff", "ext.plain", Position("ep", 8), source="nats://S")
Traceback (most recent call last):
...
adapters.brokers.foreign.UnreadableEntry: ep-8: payload is neither JSON nor UTF-8 text
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from streams import Event, EventError, Position
from streams.errors import BrokerError
from streams.event import EVENT_ATTRIBUTES, set_position_in_place, set_subject_in_place
from streams.subjects import SubjectError, validate_subject

__all__ = ["EXTERNAL_TYPE", "SkippedEntries", "UnreadableEntry", "own_event", "read_entry"]

EXTERNAL_TYPE = "io.rxstreams.external"
TEXT = "text/plain"
JSON = "application/json"
_CACHED = 4096  # subjects / timestamp seconds remembered as valid

# The attributes an event rxstreams stored has (``Event.encode()`` before publishing).
_OWN_KEYS = EVENT_ATTRIBUTES
_valid_subjects: dict[str, None] = {}
# 'YYYY-MM-DDTHH:MM:SS' parts of timestamps ``Event.from_dict`` accepted: a timestamp in
# rxstreams' own format (that part, then '.' 6 digits 'Z') is valid when its part is.
_valid_seconds: dict[str, None] = {}


class UnreadableEntry(BrokerError):
    """A log entry that cannot become an event (see the module docstring)."""

    def __init__(self, position: Position, reason: str) -> None:
        super().__init__(f"{position}: {reason}")
        self.position = position
        self.reason = reason


def _time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def read_entry(
    payload: bytes | bytearray | memoryview | None,
    subject: str | None,
    position: Position,
    *,
    source: str,
    msg_id: str | None = None,
    timestamp: float | None = None,
) -> Event:
    """The event an entry stands for, stamped with ``subject`` and ``position``.

    ``timestamp`` (seconds since the epoch) is the broker's time for the entry, used as
    the ``time`` of a foreign event. Raises :class:`UnreadableEntry`.

    >>> from streams import Position
    >>> own = Event.create({"text": "hi"}, id="a1").encode()
    >>> read_entry(own, "chat.lobby", Position("ep", 3), source="redis://S").id
    'a1'
    >>> e = read_entry(b"hello", "ext.txt", Position("ep", 4), source="redis://S", msg_id="m9")
    >>> e.id, e.data, e.datacontenttype
    ('m9', 'hello', 'text/plain')
    """
    if subject is None:
        raise UnreadableEntry(position, "entry has no subject")
    if subject not in _valid_subjects:
        try:
            validate_subject(subject)
        except SubjectError as exc:
            raise UnreadableEntry(position, f"not a valid subject: {exc}") from None
        _remember(_valid_subjects, subject)
    raw = b"" if payload is None else payload if type(payload) is bytes else bytes(payload)
    seq = (position.epoch, position.offset)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise UnreadableEntry(position, "payload is neither JSON nor UTF-8 text") from None
        return _external(text, TEXT, subject, position, source, msg_id, timestamp)
    if type(value) is dict and "specversion" in value:
        own = _own_event(value, subject, seq)
        if own is not None:
            return own
        try:
            event = Event.from_dict(value).stamped(subject, seq)
        except EventError:
            pass  # not a valid CloudEvent: its JSON is the data of an external event
        else:
            t = value.get("time")
            if type(t) is str and len(t) == 27 and t[19] == "." and t[26] == "Z":
                _remember(_valid_seconds, t[:19])
            return event
    event = _external(value, "application/json", subject, position, source, msg_id, timestamp)
    try:
        event.encode()  # orjson reads 1,024 levels of nesting but writes only 254
    except EventError as exc:
        raise UnreadableEntry(position, f"cannot be re-encoded: {exc.message}") from None
    return event


def own_event(payload: bytes, subject: str, seq: tuple[str, int]) -> Event | None:
    """The fast read of an event rxstreams itself stored, on a subject already seen valid:
    what :func:`read_entry` returns for it, or ``None`` when in any doubt (then call
    :func:`read_entry`, which reads everything and learns the subject and timestamps).

    >>> own = Event.create({"n": 1}, id="e1").encode()
    >>> _ = read_entry(own, "a.b", Position("ep", 6), source="nats://S")  # learns a.b
    >>> e = own_event(own, "a.b", ("ep", 7))
    >>> e.id, e.data, e.subject, e.sequence
    ('e1', {'n': 1}, 'a.b', 'ep-7')
    >>> own_event(b'{"amount": 6}', "a.b", ("ep", 8)) is None
    True
    """
    if subject not in _valid_subjects:
        return None
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return _own_event(value, subject, seq) if type(value) is dict else None


def _remember(cache: dict[str, None], key: str) -> None:
    if len(cache) >= _CACHED:
        cache.clear()
    cache[key] = None


def _own_event(obj: dict[str, Any], subject: str, seq: tuple[str, int]) -> Event | None:
    """The event ``Event.from_dict(obj).stamped(subject, seq)`` makes, built once, for
    the common case: the attributes rxstreams writes, of the right types, a timestamp in
    rxstreams' format whose date and second were already validated. ``None`` for anything
    else (the caller then runs the full validation)."""
    if obj.get("specversion") != "1.0" or not obj.keys() <= _OWN_KEYS:
        return None
    id_, source, type_, t = obj.get("id"), obj.get("source"), obj.get("type"), obj.get("time")
    if (
        type(id_) is not str
        or not id_
        or type(source) is not str
        or not source
        or type(type_) is not str
        or not type_
        or type(t) is not str
        or len(t) != 27
        or t[19] != "."
        or t[26] != "Z"
        or t[:19] not in _valid_seconds
        or not t[20:26].isdigit()
        or not t[20:26].isascii()
    ):
        return None
    content = obj.get("datacontenttype")
    if content is None or content == "":
        content = JSON
    elif type(content) is not str:
        return None
    for name in ("subject", "sequence"):
        value = obj.get(name)
        if value is not None and type(value) is not str:
            return None
    event = Event(
        id=id_, source=source, type=type_, time=t, datacontenttype=content, data=obj.get("data")
    )
    set_subject_in_place(event, subject)
    set_position_in_place(event, seq)
    return event


def _external(
    data: object,
    content_type: str,
    subject: str,
    position: Position,
    source: str,
    msg_id: str | None,
    timestamp: float | None,
) -> Event:
    event = Event(
        id=msg_id or f"{source}/{position}",
        source=source,
        type=EXTERNAL_TYPE,
        time=_time(timestamp),
        datacontenttype=content_type,
        data=data,
    )
    return event.stamped(subject, (position.epoch, position.offset))


class SkippedEntries:
    """Counts unreadable entries a broker's readers skipped, and logs them, at most one
    line per ``every`` seconds (a flood of foreign junk must not flood the log).

    >>> skipped = SkippedEntries("nats://S", every=60)
    >>> skipped.note(UnreadableEntry(Position("ep", 1), "entry has no subject"))
    >>> skipped.note(UnreadableEntry(Position("ep", 2), "entry has no subject"))
    >>> skipped.count
    2
    """

    def __init__(self, where: str, every: float = 10.0) -> None:
        self.where = where
        self.every = every
        self.count = 0
        self._logged_at = -float("inf")
        self._unlogged = 0

    def note(self, exc: UnreadableEntry) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._logged_at < self.every:
            self._unlogged += 1
            return
        more = f" (and {self._unlogged} more since the last report)" if self._unlogged else ""
        log.warning("%s: skipped an unreadable entry at %s%s", self.where, exc, more)
        self._logged_at = now
        self._unlogged = 0


log = logging.getLogger(__name__)

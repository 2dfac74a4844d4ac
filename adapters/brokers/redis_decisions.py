"""What RedisBroker decides, free of I/O: which retention it accepts, what a stream entry
becomes, and when a blocking read's reply can be delivered without asking again.

**Retention.** A Redis stream trims only from its oldest end, by length (``MAXLEN``) or by
entry id (``MINID``, i.e. age). ``max_events`` and ``max_age`` map onto those exactly and are
enforced with exact gap reporting. ``max_bytes`` and ``max_per_subject`` have no Redis
equivalent on one stream (a per-subject limit would delete entries from the middle of the
log), so they are **refused** with :class:`UnsupportedRetention` rather than accepted and
ignored. The Redis default is therefore :data:`REDIS_DEFAULT_RETENTION` (``max_events``
100,000 and nothing else); :class:`streams.Retention`'s own default (``max_per_subject``
1,000) is refused when passed explicitly.

>>> check_retention(None) == REDIS_DEFAULT_RETENTION
True
>>> check_retention(Retention(max_per_subject=None, max_age=60)).max_age
60
>>> check_retention(Retention())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
adapters.brokers.redis_decisions.UnsupportedRetention: Redis cannot enforce max_per_subject=1000 ...

**Entries.** Each entry normally holds ``s`` (the subject) and ``e`` (the event as
CloudEvents JSON); other producers may write anything (``redis-cli XADD key * s ext.x
amount 6``). :func:`read_fields` turns an entry into an event with
:func:`~adapters.brokers.foreign.read_entry` (the payload is the ``e`` field, the
``time`` of a foreign event the entry id's milliseconds, its id the position):

- ``s`` and ``e``: whatever ``e`` holds, as :mod:`.foreign` decides (a CloudEvent, plain
  JSON or text as the ``data`` of an ``io.rxstreams.external`` event, or unreadable);
- ``s`` without ``e``: an ``io.rxstreams.external`` event whose ``data`` is the entry's
  other fields as a ``str -> str`` dict (``{"amount": "6", "note": "hi"}``; Redis field
  values are strings, they are not parsed further);
- no ``s`` (or one that is not UTF-8 / not a valid subject), an ``e`` that cannot be read,
  other fields that are not UTF-8: :class:`~adapters.brokers.foreign.UnreadableEntry`;
  the broker counts it in ``broker.skipped``, logs it (rate-limited) and moves past it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams import Event, Position, Retention
from streams.errors import InvalidInput

from .foreign import UnreadableEntry, read_entry
from .positions import SEQ_BITS, redis_id, redis_offset

__all__ = [
    "REDIS_DEFAULT_RETENTION",
    "UnsupportedRetention",
    "check_retention",
    "cursor",
    "entry_offset",
    "fields_dict",
    "read_fields",
    "reply_is_complete",
    "subject_of",
]

_MASK = (1 << SEQ_BITS) - 1
_MAX_SEQ = (1 << 64) - 1
SUBJECT = b"s"
EVENT = b"e"
REDIS_DEFAULT_RETENTION = Retention(max_per_subject=None)


class UnsupportedRetention(InvalidInput):
    """A retention setting RedisBroker cannot enforce (it refuses rather than ignore it)."""


def check_retention(retention: Retention | None) -> Retention:
    """The retention a RedisBroker enforces: ``retention``, or the Redis default for
    ``None``. Raises :class:`UnsupportedRetention` naming each setting it cannot enforce
    and what to use instead."""
    if retention is None:
        return REDIS_DEFAULT_RETENTION
    refused = [
        f"{name}={value}"
        for name, value in (
            ("max_per_subject", retention.max_per_subject),
            ("max_bytes", retention.max_bytes),
        )
        if value is not None
    ]
    if refused:
        raise UnsupportedRetention(
            f"Redis cannot enforce {' and '.join(refused)} (a Redis stream trims only its "
            "oldest entries, by count or by age): set it to None (URL: 'none') and bound "
            "history with max_events and/or max_age, or use the NATS broker, which enforces "
            "per-subject and byte limits"
        )
    return retention


def entry_offset(entry_id: bytes | str) -> tuple[int, bool]:
    """The offset of an entry id and whether it is exact. An id another producer chose
    with a sequence part beyond the 20 bits a position has (``XADD key 5-1048576``) maps
    to the last offset of its millisecond and is not exact: such an entry is unreadable.

    >>> entry_offset(b"5-3"), entry_offset(b"5-1048576")
    ((5242883, True), (6291455, False))
    """
    try:
        return redis_offset(entry_id), True
    except ValueError:
        text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return (int(text.partition("-")[0]) << SEQ_BITS) | _MASK, False


def cursor(offset: int) -> str:
    """The entry id to read after, for a reader at ``offset``: the id itself, except at the
    last offset of a millisecond, which stands for the rest of it (every later id in that
    millisecond is beyond what a position holds, see :func:`entry_offset`).

    >>> cursor(5242883), cursor(6291455)
    ('5-3', '5-18446744073709551615')
    """
    if offset & _MASK == _MASK:
        return f"{offset >> SEQ_BITS}-{_MAX_SEQ}"
    return redis_id(offset)


def fields_dict(fields: Any) -> Mapping[bytes, bytes]:
    """An entry's fields as a mapping (redis-py gives a dict, a Lua script a flat list).

    >>> fields_dict([b"s", b"a.b", b"e", b"{}"])
    {b's': b'a.b', b'e': b'{}'}
    """
    if isinstance(fields, list):
        return dict(zip(fields[::2], fields[1::2], strict=True))
    return fields  # type: ignore[no-any-return]


def subject_of(fields: Mapping[bytes, bytes]) -> str | None:
    """The entry's subject, or ``None`` when it has none that can be read.

    >>> subject_of({b"s": b"chat.x"}), subject_of({b"e": b"{}"}), subject_of({b"s": b"\\xff"})
    ('chat.x', None, None)
    """
    raw = fields.get(SUBJECT)
    if raw is None:
        return None
    try:
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        return None


def read_fields(
    fields: Mapping[bytes, bytes], subject: str | None, position: Position, source: str
) -> Event:
    """The event an entry (with ``subject`` from :func:`subject_of`) stands for at
    ``position``; raises :class:`~adapters.brokers.foreign.UnreadableEntry`.

    >>> pos = Position("ep", (1700000000000 << 20) | 1)
    >>> e = read_fields({b"s": b"ext.x", b"amount": b"6"}, "ext.x", pos, "redis://S")
    >>> e.type, e.data, e.subject, e.time
    ('io.rxstreams.external', {'amount': '6'}, 'ext.x', '2023-11-14T22:13:20Z')
    >>> e.id, e.sequence
    ('redis://S/ep-1782579200000000001', 'ep-1782579200000000001')
    >>> read_fields({b"e": b"{}"}, None, pos, "redis://S")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adapters.brokers.foreign.UnreadableEntry: ep-...: entry has no subject
    """
    timestamp = (position.offset >> SEQ_BITS) / 1000
    payload = fields.get(EVENT)
    if payload is not None or subject is None:
        return read_entry(payload, subject, position, source=source, timestamp=timestamp)
    try:
        data = {k.decode(): v.decode() for k, v in fields.items() if k != SUBJECT}
    except (UnicodeDecodeError, AttributeError):
        raise UnreadableEntry(position, "fields are not UTF-8 text") from None
    shell = read_entry(b"{}", subject, position, source=source, timestamp=timestamp)
    return shell.replace(data=data)


def reply_is_complete(since: Position, epoch: bytes | str | None, trimmed: int) -> bool:
    """Whether the entries an ``XREAD`` after ``since`` returned can be delivered as they
    are, judged from the stream's meta read right after it on the same connection.

    ``epoch`` and ``trimmed`` (the newest offset retention removed) only grow or change
    after the read, never go back: if the epoch is still ``since``'s and nothing after
    ``since`` was removed even now, the reply held every entry after ``since`` (up to its
    count). Otherwise (``False``) the broker asks again atomically (its read script), which
    tells a real gap from a trim that only removed what the reply already held.

    >>> reply_is_complete(Position("e1", 5), b"e1", trimmed=5)
    True
    >>> reply_is_complete(Position("e1", 5), b"e1", trimmed=6)
    False
    >>> reply_is_complete(Position("e1", 5), None, trimmed=0)  # the meta vanished
    False
    """
    if epoch is None:
        return False
    text = epoch.decode() if isinstance(epoch, bytes) else epoch
    return text == since.epoch and trimmed <= since.offset

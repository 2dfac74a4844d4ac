"""Sans-I/O position logic shared by the networked brokers.

Both NATS and Redis keep one ordered log per broker, like :class:`streams.MemoryBroker`.
This module decides, from a few numbers the server reports, whether a subscriber asking
for ``since`` can be served without loss (:func:`check_since`, and :func:`last_hole` for
entries deleted from the middle of the log), and maps Redis entry ids to integer offsets and
back (:func:`redis_offset`, :func:`redis_id`).

Redis entry ids are ``"<ms>-<seq>"``; the offset is ``ms << 20 | seq`` so offsets order
exactly like ids, fit in 63 bits until the year 2109, and stay within the 19 digits a
:class:`~streams.Position` allows. A ``seq`` of 2**20 or more within one millisecond
(impossible in practice) is refused rather than mis-ordered.
"""

from __future__ import annotations

from collections.abc import Iterable

from streams import GapError, Position

__all__ = ["SEQ_BITS", "check_since", "last_hole", "redis_id", "redis_offset"]

SEQ_BITS = 20
_SEQ_MASK = (1 << SEQ_BITS) - 1


def redis_offset(entry_id: str | bytes) -> int:
    """The integer offset of a Redis stream entry id.

    >>> redis_offset("1700000000000-3")
    1782579200000000003
    >>> redis_offset("0-0")
    0
    """
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    s = int(seq or 0)
    if s > _SEQ_MASK:
        raise ValueError(f"entry id {text!r}: sequence {s} does not fit in {SEQ_BITS} bits")
    return (int(ms) << SEQ_BITS) | s


def redis_id(offset: int) -> str:
    """The Redis stream entry id of an offset (inverse of :func:`redis_offset`).

    >>> redis_id(redis_offset("1700000000000-3"))
    '1700000000000-3'
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    return f"{offset >> SEQ_BITS}-{offset & _SEQ_MASK}"


def check_since(
    since: Position,
    epoch: str,
    last: int,
    lost_through: int,
    earliest: Position | None,
) -> GapError | None:
    """The gap a subscriber resuming after ``since`` would suffer, or ``None``.

    ``last`` is the newest offset ever assigned in ``epoch`` (0 when none), and
    ``lost_through`` the newest offset that retention removed (0 when none): every
    removal takes the oldest entries, so events after ``since`` are gone exactly when
    ``lost_through > since.offset``. ``earliest`` is what the error names.

    >>> check_since(Position("e1", 5), "e1", last=9, lost_through=5, earliest=None) is None
    True
    >>> check_since(Position("e1", 5), "e1", 9, 6, Position("e1", 7)).reason
    'events were evicted'
    >>> check_since(Position("e0", 5), "e1", 9, 0, None).reason
    'epoch changed (history lost)'
    """
    if since.epoch != epoch:
        return GapError(since, earliest, "epoch changed (history lost)")
    if since.offset > last:
        return GapError(since, earliest, "position is ahead of the log")
    if lost_through > since.offset:
        return GapError(since, earliest, "events were evicted")
    return None


def last_hole(since: int, deleted: Iterable[int], before: int | None) -> int | None:
    """The newest offset in ``deleted`` after ``since`` and before ``before``, or ``None``.

    ``deleted`` lists offsets removed from the middle of the log (NATS's per-subject limit
    removes a subject's oldest message wherever it lies). A subscriber resuming after
    ``since`` lost an event exactly when one of those held a matching subject; a deleted
    entry's subject is unknown, but a subject only loses entries older than its first
    retained one, so only holes before ``before`` (the newest first retained offset among
    the matching subjects that lost entries; ``None``: unknown, any hole counts) can matter.
    History is complete again just after the returned offset.

    >>> last_hole(1, [2, 3, 4, 9], before=5)
    4
    >>> last_hole(1, [2, 3, 4, 9], before=None)
    9
    >>> last_hole(4, [2, 3, 4, 9], before=5) is None
    True
    """
    holes = [d for d in deleted if d > since and (before is None or d < before)]
    return max(holes) if holes else None

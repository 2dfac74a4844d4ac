"""What NatsBroker decides, free of I/O: read a delivery's reply subject, judge each
delivery of a push consumer (deliver, skip, reset, gap, or look closer), find the holes a
per-subject limit left, and lay out an atomic batch publish.

A JetStream delivery names its place in its reply subject,
``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>``
(a domain and account hash follow ``ACK`` in the newer, longer form); reading those few
numbers here is cheaper than nats-py's ``msg.metadata``, which builds a datetime and two
objects per message.

>>> d = parse_ack_reply("$JS.ACK.S.c1.1.42.7.1700000000000000000.3")
>>> d.stream_seq, d.consumer_seq, d.pending, d.timestamp
(42, 7, 3, 1700000000.0)
>>> judge(last=41, delivered=6, d=d, every_subject=True, per_subject=0)
<Step.DELIVER: 'deliver'>
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ATOMIC_BATCH_MAX",
    "BATCH_COMMIT",
    "BATCH_ID",
    "BATCH_SEQUENCE",
    "Delivery",
    "Holes",
    "Step",
    "atomic_capable",
    "batch_chunks",
    "batch_headers",
    "batch_positions",
    "hole_between",
    "holes_from",
    "judge",
    "parse_ack_reply",
]

# -- deliveries ----------------------------------------------------------------------------

_V1_TOKENS = 9  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
_V2_MIN_TOKENS = 11  # $JS.ACK.<domain>.<account hash>.<stream>... [.<random>]


@dataclass(slots=True)  # not frozen: made per message, and frozen init costs twice as much
class Delivery:
    """Where one delivered message stands, from its reply subject."""

    stream_seq: int
    consumer_seq: int
    timestamp: float  # when the stream stored it, seconds since the epoch
    pending: int  # matching messages after it, when it was sent


def parse_ack_reply(reply: str) -> Delivery | None:
    """The :class:`Delivery` a JetStream reply subject describes, or ``None`` when
    ``reply`` is not one (a plain message, a flow-control request).

    >>> parse_ack_reply("$JS.ACK.dom.acc.S.c1.1.9.2.1700000000500000000.0.x7")
    Delivery(stream_seq=9, consumer_seq=2, timestamp=1700000000.5, pending=0)
    >>> parse_ack_reply("_INBOX.abc") is None
    True
    """
    if not reply.startswith("$JS.ACK."):
        return None
    tokens = reply.split(".")
    n = len(tokens)
    if n == _V1_TOKENS:
        at = 4
    elif n >= _V2_MIN_TOKENS:
        at = 6
    else:
        return None
    try:
        return Delivery(
            int(tokens[at + 1]),
            int(tokens[at + 2]),
            int(tokens[at + 3]) / 1e9,
            int(tokens[at + 4]),
        )
    except ValueError:
        return None


class Step(enum.Enum):
    """What a push consumer does with one delivery."""

    DELIVER = "deliver"  # emit it
    STALE = "stale"  # at or before the cursor: already emitted, drop it
    RESET = "reset"  # a delivery went missing in transit: recreate the consumer
    HOLE = "hole"  # messages between the cursor and it are gone: a gap
    VERIFY = "verify"  # it skipped stream sequences that a per-subject limit may have
    #                    deleted before we read them: look up the holes first


def judge(last: int, delivered: int, d: Delivery, *, every_subject: bool, per_subject: int) -> Step:
    """The :class:`Step` for delivery ``d`` of a consumer that has emitted through stream
    sequence ``last`` and received ``delivered`` messages so far.

    ``every_subject``: the consumer's filter takes every subject of the stream, so any
    skipped stream sequence is a lost message (known without asking). Otherwise skipped
    sequences are normally other subjects' messages; they can hide a message of ours only
    when the stream has a per-subject limit (``per_subject`` > 0) and we lag by at least
    that many: a subject loses its oldest message only when ``per_subject`` newer ones are
    stored, all after the skipped range and matching, so at least ``per_subject - 1`` were
    still pending when ``d`` was sent. A consumer that keeps up never needs a look-up.

    >>> d = Delivery(stream_seq=10, consumer_seq=3, timestamp=0.0, pending=0)
    >>> judge(7, 2, d, every_subject=True, per_subject=0)
    <Step.HOLE: 'hole'>
    >>> judge(7, 2, d, every_subject=False, per_subject=3)
    <Step.DELIVER: 'deliver'>
    >>> judge(7, 2, Delivery(10, 3, 0.0, pending=2), every_subject=False, per_subject=3)
    <Step.VERIFY: 'verify'>
    >>> judge(7, 1, d, every_subject=False, per_subject=0)
    <Step.RESET: 'reset'>
    """
    if d.consumer_seq != delivered + 1:
        return Step.RESET
    if d.stream_seq <= last:
        return Step.STALE
    if d.stream_seq == last + 1:
        return Step.DELIVER
    if every_subject:
        return Step.HOLE
    if per_subject > 0 and d.pending + 1 >= per_subject:
        return Step.VERIFY
    return Step.DELIVER


@dataclass(frozen=True, slots=True)
class Holes:
    """What the stream had lost when asked: ``deleted``, the sorted sequences removed from
    the middle of the log; ``before``, the newest first retained sequence among the
    matching subjects at their per-subject limit (only holes before it can have held a
    matching message; ``None``: unknown, every hole counts); ``first_seq``, the oldest
    retained sequence (everything before it is gone); ``covers``, the consumer sequence
    through which deliveries had reached us when asked (later deliveries need a new look)."""

    deleted: tuple[int, ...]
    before: int | None
    first_seq: int
    covers: int = 0


def hole_between(after: int, upto: int, holes: Holes) -> int | None:
    """The newest sequence strictly between ``after`` and ``upto`` that may have held a
    matching message and is gone, or ``None``.

    >>> h = Holes(deleted=(3, 5, 8), before=7, first_seq=2)
    >>> hole_between(2, 9, h), hole_between(5, 9, h), hole_between(0, 9, Holes((), None, 4))
    (5, None, 3)
    """
    top = upto if holes.before is None else min(upto, holes.before)
    i = bisect.bisect_left(holes.deleted, top)
    found = holes.deleted[i - 1] if i and holes.deleted[i - 1] > after else None
    evicted = min(holes.first_seq - 1, upto - 1)
    if evicted > after and (found is None or evicted > found):
        return evicted
    return found


def holes_from(deleted: Iterable[int], before: int | None, first_seq: int, covers: int) -> Holes:
    """A :class:`Holes` from the server's (unsorted) deleted list."""
    return Holes(tuple(sorted(deleted)), before, first_seq, covers)


# -- atomic batch publish (NATS server 2.12+, ADR-50) --------------------------------------

BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
# The server's default for ``jetstream.limits.max_batch_size`` (messages per atomic batch);
# a server configured lower says so in its refusal, and the broker splits accordingly.
ATOMIC_BATCH_MAX = 1000


def atomic_capable(major: int, minor: int) -> bool:
    """Whether a server of this version can publish a batch atomically.

    >>> atomic_capable(2, 9), atomic_capable(2, 12), atomic_capable(3, 0)
    (False, True, True)
    """
    return (major, minor) >= (2, 12)


def batch_headers(batch_id: str, seq: int, last: bool, msg_id: str) -> dict[str, str]:
    """The headers of message ``seq`` (from 1) of an atomic batch; the last one commits.

    >>> h = batch_headers("b1", 2, True, "e7")
    >>> h["Nats-Batch-Sequence"], h["Nats-Batch-Commit"], h["Nats-Msg-Id"]
    ('2', '1', 'e7')
    """
    headers = {"Nats-Msg-Id": msg_id, BATCH_ID: batch_id, BATCH_SEQUENCE: str(seq)}
    if last:
        headers[BATCH_COMMIT] = "1"
    return headers


def batch_positions(last_seq: int, count: int) -> range:
    """The stream sequences of a committed batch, from the commit's acknowledgement: a
    batch is stored contiguously (nothing else lands inside it).

    >>> list(batch_positions(12, 3))
    [10, 11, 12]
    """
    return range(last_seq - count + 1, last_seq + 1)


def batch_chunks(n: int, limit: int) -> list[range]:
    """Index ranges of ``n`` events in batches of at most ``limit``.

    >>> batch_chunks(5, 2)
    [range(0, 2), range(2, 4), range(4, 5)]
    """
    return [range(i, min(i + limit, n)) for i in range(0, n, limit)]

"""The Broker protocol shared by the embedded broker and the NATS and Redis brokers.

Positions are ordered across all subjects of one broker (a single log, like a
JetStream stream or a Redis stream) and carry an *epoch* that changes whenever
history is lost. ``subscribe(pattern, since=p)`` delivers every matching event after
``p``; when events after ``p`` are no longer retained it fails with :class:`GapError`,
which names the earliest position still available. Nothing is skipped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from reactivex import Observable

from .errors import BrokerError, InvalidInput
from .event import Event

__all__ = [
    "Broker",
    "GapError",
    "Position",
    "PositionError",
    "PublishError",
    "Retention",
    "resume_point",
]


class PositionError(InvalidInput):
    """A position string that cannot be parsed."""


class Position(NamedTuple):
    """A place in a broker's log: ``epoch`` plus a monotonic ``offset``.

    Written as ``"<epoch>-<offset>"`` (what SSE ``id:`` lines and ``since`` carry).
    A tuple, so it is cheap to create and orders by (epoch, offset).

    >>> Position.parse("k3f9-42")
    Position(epoch='k3f9', offset=42)
    >>> str(Position("k3f9", 42))
    'k3f9-42'
    """

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse ``"<epoch>-<offset>"``; raises :class:`PositionError`.

        The offset is ASCII digits only (``str.isdigit`` also accepts ``"²"``, which
        ``int`` refuses):

        >>> Position.parse("e-\u00b2")
        Traceback (most recent call last):
        ...
        streams.broker.PositionError: not a position: 'e-²' (expected '<epoch>-<offset>')
        """
        if not isinstance(text, str):
            raise PositionError(f"not a position: {text!r}")
        epoch, sep, offset = text.rpartition("-")
        if not sep or not epoch or not (offset.isascii() and offset.isdigit()) or len(offset) > 19:
            raise PositionError(f"not a position: {text!r} (expected '<epoch>-<offset>')")
        return cls(epoch, int(offset))


class PublishError(BrokerError, RuntimeError):
    """The broker did not acknowledge a publish: the event may not be stored.

    Raised by ``publish``/``apublish``/``apublish_many`` of every broker, after their
    retries. ``committed`` holds the positions stored before the failure (a batch on a
    broker that cannot store it atomically). The caller decides whether to retry (NATS
    deduplicates by event id, Redis may then store the event twice) or to report it. A
    ``RuntimeError`` too, as the networked brokers' publish errors always were.

    >>> err = PublishError("not acknowledged", committed=[Position("e", 1)])
    >>> isinstance(err, RuntimeError), err.committed
    (True, [Position(epoch='e', offset=1)])
    """

    def __init__(self, message: str, committed: Sequence[Position] = ()) -> None:
        super().__init__(message)
        self.committed = list(committed)


class GapError(BrokerError):
    """Events after ``requested`` are gone (evicted, or a new epoch, or ``requested`` was
    never issued); ``earliest`` is the first position from which history is complete.

    ``earliest`` is ``None`` when the broker never held anything. Resume with
    ``since=gap.resume_from`` to continue with what is still retained.
    """

    def __init__(self, requested: Position, earliest: Position | None, reason: str) -> None:
        where = str(earliest) if earliest else "nothing retained"
        super().__init__(f"gap after {requested}: {reason}; earliest available is {where}")
        self.requested = requested
        self.earliest = earliest
        self.reason = reason

    @property
    def resume_from(self) -> Position | None:
        """The ``since`` that continues with what is still retained (:func:`resume_point`)."""
        return resume_point(self.requested, self.earliest)


def resume_point(requested: Position, earliest: Position | None) -> Position | None:
    """Where to resume after a gap: just before ``earliest``, the first position from which
    the broker's history is complete (also when ``requested`` was ahead of the log).

    >>> resume_point(Position("e", 5), Position("e", 9))
    Position(epoch='e', offset=8)
    >>> resume_point(Position("old", 5), Position("e", 1))
    Position(epoch='e', offset=0)
    """
    if earliest is None:
        return None
    return Position(earliest.epoch, max(earliest.offset - 1, 0))


@dataclass(frozen=True, slots=True)
class Retention:
    """History limits; ``None`` means unbounded on that axis (bound at least one).

    A byte bound (``max_bytes``) makes :class:`~streams.memory.MemoryBroker` encode each
    event at publish and keep only its bytes: about 1.3x the encoded size per retained event,
    against about 4x for the event objects a count-only bound keeps, at about 3 us more per
    publish. In-process pipelines keep the count-only default; a server encodes every event
    for delivery anyway, so what it serves by default (``rxstreams serve``/``demo``,
    ``create_app()`` without a broker) bounds bytes too: :meth:`for_server`.

    >>> Retention.for_server().max_bytes // 2**20
    256
    """

    max_events: int | None = 100_000
    max_bytes: int | None = None  # bounding bytes encodes every event at publish
    max_age: float | None = None  # seconds
    max_per_subject: int | None = 1_000

    @classmethod
    def for_server(cls, max_bytes: int = 256 * 2**20) -> Retention:
        """The default for a served embedded broker: 100,000 events and 256 MiB of encoded
        events, whichever comes first, and 1,000 per subject."""
        return cls(max_bytes=max_bytes)


@runtime_checkable
class Broker(Protocol):
    """What every broker offers. The embedded :class:`~streams.memory.MemoryBroker` is sync;
    networked brokers expose the same names with ``publish`` awaitable (see ``apublish``)."""

    @property
    def epoch(self) -> str: ...

    async def apublish(self, subject: str, event: Event | Any) -> Position:
        """Publish and wait for the broker's acknowledgement; raises :class:`PublishError`."""
        ...

    async def apublish_many(self, subject: str, events: Sequence[Event | Any]) -> list[Position]:
        """Publish a batch, all or nothing where the broker can; raises :class:`PublishError`
        whose ``committed`` lists what was stored anyway (empty for atomic brokers)."""
        ...

    async def last_position(self) -> Position:
        """Where the log ends now: the position of the newest stored event (offset 0 when
        nothing was ever stored in this epoch). ``subscribe(p, since=await
        last_position())`` is live from this moment, whichever process publishes next."""
        ...

    def subscribe(self, pattern: str, since: Position | None = None) -> Observable[Event]:
        """A hot stream of events matching ``pattern``: history after ``since``, then live."""
        ...

    async def close(self) -> None: ...

"""Keyed worker groups, the decisions: free of I/O (see :mod:`.stateful_worker` for the shell).

A group of ``N`` partitions has ``N + 1`` *units* a member can own: ``"router"`` (reads the
input pattern in log order and republishes each event to its partition's subject) and
``"p0"`` .. ``"p<N-1>"`` (a long-lived pipeline over one partition subject). This module
decides:

- which partition an event belongs to (:func:`key_function`, :func:`partition_of`: the
  same stable hash as :func:`operators.partition`);
- how an event travels through its partition subject and comes back unchanged
  (:func:`to_partition`, :func:`from_partition`);
- who should own what (:func:`assign`: a deterministic function of the live members);
- what a checkpoint holds and how it is encoded (:class:`Checkpoint`);
- when a checkpoint is due (:class:`CheckpointPolicy`) and the ids of outputs
  (:func:`output_id`).

>>> key = key_function("data.room")
>>> e = Event.create({"room": "r1"}, subject="chat.r1.msg", id="m1")
>>> partition_of(key(e), 16) == partition_of("r1", 16)
True
>>> from_partition(to_partition(e, "g", 3)) == e
True
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from operators.routing import stable_hash
from streams import Event, validate_subject
from streams.errors import PipelineError

__all__ = [
    "ROUTER",
    "Checkpoint",
    "CheckpointPolicy",
    "KeyMissing",
    "assign",
    "dead_letter_subject",
    "from_partition",
    "key_function",
    "output_event",
    "output_id",
    "partition_of",
    "partition_subject",
    "to_partition",
    "units",
]

ROUTER = "router"
PARTITION_PREFIX = "rxpart"
_ORIGINAL_SUBJECT = "rxsubject"  # the CloudEvents extensions carrying the input's subject
_ORIGINAL_ID = "rxid"  # and id
_SUBJECT_TOKEN = re.compile(r"^subject\[(-?\d+)\]$")


class KeyMissing(PipelineError, LookupError):
    """An event has no usable key (missing field, or a value that cannot be hashed)."""


def key_function(spec: str | Callable[[Event], Any]) -> Callable[[Event], Any]:
    """The key of an event from ``--key``: ``data.a.b`` (a dotted field path in ``data``),
    ``subject[i]`` (a subject token), ``subject``/``type``/``source``/``id``, or a function.

    Raises :class:`KeyMissing` when the event lacks it.

    >>> e = Event.create({"user": {"id": 7}}, subject="chat.r1.msg")
    >>> key_function("data.user.id")(e), key_function("subject[1]")(e)
    (7, 'r1')
    >>> key_function("data.room")(e)
    Traceback (most recent call last):
    ...
    adapters.brokers.partitions.KeyMissing: key data.room: 'room' missing
    """
    if callable(spec):
        return spec
    token = _SUBJECT_TOKEN.match(spec)
    if token is not None:
        index = int(token.group(1))

        def subject_token(event: Event) -> Any:
            parts = (event.subject or "").split(".")
            try:
                return parts[index]
            except IndexError:
                raise KeyMissing(f"key {spec}: subject {event.subject!r} is too short") from None

        return subject_token
    if spec in ("subject", "type", "source", "id"):
        return lambda event: getattr(event, spec)
    head, _, rest = spec.partition(".")
    if head != "data":
        raise ValueError(f"--key {spec!r}: expected data.<path>, subject[i], subject, type or id")
    path = rest.split(".") if rest else []

    def field_path(event: Event) -> Any:
        value: Any = event.data
        for name in path:
            if not isinstance(value, dict) or name not in value:
                raise KeyMissing(f"key {spec}: {name!r} missing")
            value = value[name]
        return value

    return field_path


def partition_of(key: Any, n: int) -> int:
    """``stable_hash(key) % n``; a key that is not a str, bytes, number or bool (a dict, a
    list, ``None``) raises :class:`KeyMissing`: its ``repr`` is not a stable identity."""
    if key is None or not isinstance(key, str | bytes | int | float | bool):
        raise KeyMissing(f"key {key!r} is not a string or a number")
    return stable_hash(key) % n


def units(partitions: int) -> list[str]:
    """Everything a group's members share out: the router, then every partition.

    >>> units(3)
    ['router', 'p0', 'p1', 'p2']
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return [ROUTER, *(f"p{i}" for i in range(partitions))]


def _rank(unit: str, member: str) -> bytes:
    return hashlib.blake2b(f"{unit}/{member}".encode(), digest_size=8).digest()


def assign(all_units: Sequence[str], members: Iterable[str]) -> dict[str, list[str]]:
    """Who should own what: a deterministic function of the live members.

    Every unit goes to exactly one member and counts differ by at most one. Each unit
    ranks the members by a hash of ``unit/member`` (rendezvous hashing) and goes to the
    best-ranked one with room left, so a member joining or leaving moves few units besides
    its own share. Members computing it from the same live set get the same answer (the
    leases settle the moments when they see different sets).

    >>> plan = assign(units(3), ["b", "a"])
    >>> sorted(len(us) for us in plan.values()), sorted(u for us in plan.values() for u in us)
    ([2, 2], ['p0', 'p1', 'p2', 'router'])
    >>> assign(units(1), [])
    {}
    """
    ordered = sorted(set(members))
    plan: dict[str, list[str]] = {m: [] for m in ordered}
    if not ordered:
        return plan
    floor, extra = divmod(len(all_units), len(ordered))
    for unit in all_units:
        ranked = sorted(ordered, key=lambda m: (_rank(unit, m), m))
        for m in ranked:
            n = len(plan[m])
            if n < floor or (n == floor and extra > 0):
                if n == floor:
                    extra -= 1
                plan[m].append(unit)
                break
    return plan


def partition_subject(group: str, partition: int) -> str:
    """The subject carrying partition ``partition`` of ``group``.

    >>> partition_subject("counts", 3)
    'rxpart.counts.3'
    """
    subject = f"{PARTITION_PREFIX}.{group}.{partition}"
    validate_subject(subject)
    return subject


def is_internal(subject: str | None) -> bool:
    """Partition subjects are never read back by a router (a ``>`` pattern would loop)."""
    return bool(subject) and (subject or "").startswith(PARTITION_PREFIX + ".")


def dead_letter_subject(group: str) -> str:
    """Where a router sends events whose key is missing: ``rxdead.<group>``."""
    return f"rxdead.{group}"


def to_partition(event: Event, group: str, partition: int) -> Event:
    """The copy of ``event`` published to its partition subject, with an id derived from
    the input's (so a replayed republish is a duplicate the broker drops, while the input
    itself, in the same stream and duplicate window, is not mistaken for it); the input's
    subject and id travel in extensions.

    >>> e = Event.create(1, subject="a.b", id="x1")
    >>> c = to_partition(e, "g", 2)
    >>> c.id, c.subject, c.extensions
    ('rxpart:g:x1', 'rxpart.g.2', {'rxsubject': 'a.b', 'rxid': 'x1'})
    """
    ext = dict(event.extensions or {})
    ext[_ORIGINAL_SUBJECT] = event.subject or ""
    ext[_ORIGINAL_ID] = event.id
    return Event(
        id=f"{PARTITION_PREFIX}:{group}:{event.id}",
        source=event.source,
        type=event.type,
        subject=partition_subject(group, partition),
        time=event.time,
        datacontenttype=event.datacontenttype,
        data=event.data,
        extensions=ext,
    )


def from_partition(event: Event) -> Event:
    """The input event back from its partition copy (its ``sequence`` is the partition
    position, the one checkpoints record)."""
    ext = dict(event.extensions or {})
    subject = ext.pop(_ORIGINAL_SUBJECT, None) or event.subject
    restored = Event(
        id=ext.pop(_ORIGINAL_ID, None) or event.id,
        source=event.source,
        type=event.type,
        subject=subject,
        time=event.time,
        datacontenttype=event.datacontenttype,
        data=event.data,
        extensions=ext or None,
    )
    seq = event.sequence
    return restored.stamped(subject or "", seq) if seq is not None else restored


def output_id(group: str, unit: str, offset: int, index: int) -> str:
    """The deterministic id of the ``index``-th output caused by the input at ``offset``.

    >>> output_id("g", "p3", 42, 0)
    'g:p3:42:0'
    """
    return f"{group}:{unit}:{offset}:{index}"


def output_event(value: Any, out_id: str, cause: Event, to: str | None) -> tuple[str, Event]:
    """``(subject, event)`` for one pipeline output: an :class:`Event` keeps its content and
    subject (unless ``to`` is given) under the deterministic id; any other value becomes
    the data of an event timed like its cause. Raises ``ValueError`` without a subject."""
    if isinstance(value, Event):
        subject = to or value.subject
        event = Event(
            id=out_id,
            source=value.source,
            type=value.type,
            subject=subject,
            time=value.time,
            datacontenttype=value.datacontenttype,
            data=value.data,
            extensions=value.extensions,
        )
    else:
        subject = to
        event = Event(
            id=out_id, source="rxstreams/worker", type="rxstreams.output", time=cause.time,
            subject=subject, data=value,
        )  # fmt: skip
    if not subject:
        raise ValueError(f"output {value!r} has no subject: give the worker --to SUBJECT")
    return subject, event


@dataclass(slots=True)
class CheckpointPolicy:
    """A checkpoint is due after ``every`` events or ``seconds`` since the last one
    (whichever comes first; ``every=0`` turns checkpoints off until the partition stops).

    >>> p = CheckpointPolicy(every=100, seconds=1.0)
    >>> p.due(events=100, elapsed=0.1), p.due(events=3, elapsed=1.5), p.due(0, 9.0)
    (True, True, False)
    """

    every: int = 1000
    seconds: float = 1.0

    def due(self, events: int, elapsed: float) -> bool:
        if events <= 0 or self.every <= 0:
            return False
        return events >= self.every or elapsed >= self.seconds


def _encode_state(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$b64": base64.b64encode(value).decode()}
    return value


def _decode_state(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$b64"}:
        return base64.b64decode(value["$b64"])
    return value


@dataclass(slots=True)
class Checkpoint:
    """What a partition's owner commits atomically: the last input position it covers,
    the snapshot of every stateful stage by name, and (NATS) the outbox: outputs of the
    covered inputs, republished by whoever restores this checkpoint.

    >>> c = Checkpoint("e-9", {"count-0": {"n": 2}, "raw": b"\\x00"}, [b'{"id":"x"}'], 9)
    >>> Checkpoint.decode(c.encode()) == c
    True
    >>> Checkpoint.decode(b"") is None
    True
    """

    position: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    outbox: list[bytes] = field(default_factory=list)
    events: int = 0  # inputs processed since the partition started (all owners)
    size: int = field(default=0, compare=False)  # bytes, once encoded

    def encode(self) -> bytes:
        raw = orjson.dumps(
            {
                "v": 1,
                "position": self.position,
                "state": {k: _encode_state(v) for k, v in self.state.items()},
                "outbox": [o.decode() for o in self.outbox],
                "events": self.events,
            }
        )
        self.size = len(raw)
        return raw

    @classmethod
    def decode(cls, raw: bytes | None) -> Checkpoint | None:
        if not raw:
            return None
        obj = orjson.loads(raw)
        return cls(
            obj.get("position"),
            {k: _decode_state(v) for k, v in (obj.get("state") or {}).items()},
            [o.encode() for o in obj.get("outbox") or []],
            int(obj.get("events") or 0),
        )

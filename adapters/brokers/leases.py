"""Leases, fencing and checkpoints kept in the broker: what a keyed worker group needs from it.

:class:`StateStore` is implemented twice, with nothing but the broker we already run:

- :class:`~.nats_state.NatsState`: a JetStream KV bucket; a lease and a checkpoint are keys,
  fenced by the KV revision (compare-and-set, ``update(key, value, last=revision)``);
- :class:`~.redis_state.RedisState`: Redis keys beside the stream; a lease is ``SET NX PX``,
  the fencing token an ``INCR`` checked inside the commit script.

A member *acquires* a unit's lease (when free or expired), *claims* the unit (which fences
every earlier owner: from then on their commits fail with :class:`Fenced`) and gets the last
checkpoint, then *commits* checkpoints with their outputs. A paused member whose lease
lapsed and whose unit was claimed by another can renew nothing and commit nothing.

A commit that fails for any reason (:class:`Fenced`, :class:`CheckpointTooLarge`, the broker
away) stores nothing and publishes nothing: the worker never moves a partition past input
that no stored checkpoint covers (see :mod:`.stateful_worker`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from streams import Event
from streams.errors import BrokerError

from .partitions import Checkpoint

__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "CheckpointTooLarge",
    "Fenced",
    "Lease",
    "Routed",
    "StateStore",
    "check_size",
]

MAX_CHECKPOINT_BYTES = 256 * 2**20
"""The largest encoded checkpoint a store writes (Redis strings stop at 512 MB; past a few
hundred MB a checkpoint is a sign of unbounded state, and every takeover reads it whole)."""

Routed = tuple[str, Event]
"""An event and the subject it goes to (a partition subject, an output subject)."""


class Fenced(BrokerError):
    """Another member claimed the unit: this member's lease and commits are void."""


class CheckpointTooLarge(BrokerError):
    """A checkpoint is larger than the store accepts: nothing was written."""


def check_size(unit: str, size: int, limit: int) -> None:
    """Raise :class:`CheckpointTooLarge` when an encoded checkpoint exceeds ``limit``.

    >>> check_size("p0", 10, 10)
    >>> check_size("p0", 11, 10)
    Traceback (most recent call last):
    ...
    adapters.brokers.leases.CheckpointTooLarge: p0: checkpoint of 11 bytes exceeds the limit of 10
    """
    if size > limit:
        raise CheckpointTooLarge(f"{unit}: checkpoint of {size} bytes exceeds the limit of {limit}")


@dataclass(slots=True)
class Lease:
    """One member's hold on one unit. ``token`` is the fencing token its commits carry
    (NATS: the checkpoint key's revision; Redis: the unit's ``INCR`` counter);
    ``revision`` is the lease key's revision (NATS) used to renew it."""

    unit: str
    member: str
    token: int = 0
    revision: int = 0


class StateStore(Protocol):
    """What :mod:`.stateful_worker` asks of the broker (see the module docstring)."""

    async def heartbeat(self, member: str, ttl: float) -> list[str]:
        """Mark ``member`` alive for ``ttl`` seconds; the live members, sorted."""
        ...

    async def leave(self, member: str) -> None:
        """Remove ``member`` from the live set at once (a clean stop)."""
        ...

    async def acquire(self, unit: str, member: str, ttl: float) -> Lease | None:
        """The lease on ``unit`` if it is free, expired or already ``member``'s."""
        ...

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Extend the lease; ``False`` when it was lost (expired and taken)."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give the lease up now (if still held), so the next owner need not wait."""
        ...

    async def claim(self, lease: Lease) -> Checkpoint | None:
        """Fence every earlier owner of the unit and return its last checkpoint."""
        ...

    async def commit(self, lease: Lease, checkpoint: Checkpoint, outputs: Sequence[Routed]) -> None:
        """Store the checkpoint and the outputs it covers, atomically with respect to the
        fence; raises :class:`Fenced` when another member claimed the unit."""
        ...

    async def route(self, lease: Lease, checkpoint: Checkpoint, routed: Sequence[Routed]) -> None:
        """The router's commit: publish each event to its partition subject (a replay's
        republish is dropped by id), then store the router's position; fenced."""
        ...

    async def owners(self, units: Sequence[str]) -> dict[str, str]:
        """The member whose lease on each unit is live now (units without one are absent)."""
        ...

    async def checkpoint(self, unit: str) -> Checkpoint | None:
        """The last committed checkpoint of ``unit`` (for graphs and tests)."""
        ...

    async def close(self) -> None: ...

    async def drop(self) -> None:
        """Delete everything this group stored (tests and tear-down)."""
        ...

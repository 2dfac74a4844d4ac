"""A keyed worker group's leases and checkpoints in a JetStream KV bucket (nats-py).

Bucket ``rx_<stream>_<group>`` (history 1), keys:

- ``members``: ``{member: until}`` (wall-clock seconds), rewritten by compare-and-set;
- ``lease.<unit>``: ``{"member", "until"}``; acquired when absent, expired or already ours,
  renewed and released by compare-and-set on the revision we last wrote;
- ``ckpt.<unit>``: the :class:`~.partitions.Checkpoint`. Claiming rewrites it, and the new
  revision is the owner's fencing token: every commit is ``update(last=token)``, so after a
  claim an earlier owner's commit fails (:class:`~.leases.Fenced`).

Outputs cannot be written atomically with a KV key, so they go in the checkpoint's *outbox*
and are published after the commit under their deterministic ids (``Nats-Msg-Id``); whoever
claims the unit next publishes the outbox again and the stream's duplicate window (2 minutes)
drops what was already stored. The limits: a checkpoint (state plus outbox) must fit in one
message (the server's ``max_payload``, 1 MB by default), and an outbox republished more than
the duplicate window after it was first published would be stored twice.

Wall-clock expiry: members must have clocks within a fraction of the lease period.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson

from streams import Event

from .leases import Fenced, Lease, Routed
from .partitions import Checkpoint

__all__ = ["NatsState"]

_CAS_ATTEMPTS = 50


def bucket_name(stream: str, group: str) -> str:
    """A valid KV bucket name for ``group`` on ``stream``.

    >>> bucket_name("chat", "room.counts")
    'rx_chat_room_counts'
    """
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"rx_{stream}_{group}")


def _by_subject(routed: Sequence[Routed]) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = {}
    for subject, event in routed:
        groups.setdefault(subject, []).append(event)
    return groups


class NatsState:
    """:class:`~.leases.StateStore` on a JetStream KV bucket beside ``broker``'s stream."""

    def __init__(self, broker: Any, group: str, parts: Any) -> None:
        self.broker = broker
        self.parts = parts  # PartitionLogs: where routed events go
        self.group = group
        self.bucket = bucket_name(broker.stream, group)
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._lock = asyncio.Lock()

    async def _store(self) -> Any:
        async with self._lock:
            if self._kv is None:
                self._nc = await nats.connect(
                    self.broker.url,
                    connect_timeout=2,
                    reconnect_time_wait=0.2,
                    max_reconnect_attempts=-1,
                    name=f"rxstreams-state:{self.bucket}",
                )
                self._js = self._nc.jetstream(timeout=self.broker.timeout)
                try:
                    self._kv = await self._js.key_value(self.bucket)
                except nats.js.errors.BucketNotFoundError:
                    self._kv = await self._js.create_key_value(bucket=self.bucket, history=1)
            return self._kv

    async def _get(self, key: str) -> tuple[bytes | None, int]:
        kv = await self._store()
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # also a deleted key
            return None, 0
        return entry.value, entry.revision

    async def _cas(self, key: str, value: bytes, revision: int) -> int | None:
        """Write ``key`` if its revision is still ``revision`` (0: absent); the new revision."""
        kv = await self._store()
        try:
            if revision == 0:
                return int(await kv.create(key, value))
            return int(await kv.update(key, value, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def _members(self, change: Any) -> list[str]:
        for _ in range(_CAS_ATTEMPTS):
            raw, rev = await self._get("members")
            now = time.time()
            table = {m: u for m, u in (orjson.loads(raw) if raw else {}).items() if u > now}
            change(table, now)
            if await self._cas("members", orjson.dumps(table), rev) is not None:
                return sorted(table)
        raise RuntimeError(f"{self.bucket}: members table too contended")

    async def heartbeat(self, member: str, ttl: float) -> list[str]:
        return await self._members(lambda table, now: table.__setitem__(member, now + ttl))

    async def leave(self, member: str) -> None:
        await self._members(lambda table, now: table.pop(member, None))

    async def acquire(self, unit: str, member: str, ttl: float) -> Lease | None:
        key = f"lease.{unit}"
        raw, rev = await self._get(key)
        now = time.time()
        if raw:
            held = orjson.loads(raw)
            if held.get("member") != member and held.get("until", 0) > now:
                return None
        value = orjson.dumps({"member": member, "until": now + ttl})
        new = await self._cas(key, value, rev)
        return None if new is None else Lease(unit, member, 0, new)

    async def renew(self, lease: Lease, ttl: float) -> bool:
        value = orjson.dumps({"member": lease.member, "until": time.time() + ttl})
        new = await self._cas(f"lease.{lease.unit}", value, lease.revision)
        if new is None:
            return False
        lease.revision = new
        return True

    async def release(self, lease: Lease) -> None:
        value = orjson.dumps({"member": lease.member, "until": 0})
        await self._cas(f"lease.{lease.unit}", value, lease.revision)

    async def claim(self, lease: Lease) -> Checkpoint | None:
        key = f"ckpt.{lease.unit}"
        for _ in range(_CAS_ATTEMPTS):
            raw, rev = await self._get(key)
            found = Checkpoint.decode(raw)
            new = await self._cas(key, (found or Checkpoint()).encode(), rev)
            if new is not None:
                lease.token = new
                if found is not None and found.outbox:
                    outbox = [Event.decode(raw_event) for raw_event in found.outbox]
                    await self._publish([(e.subject or "", e) for e in outbox])
                return found
        raise RuntimeError(f"{self.bucket}: cannot claim {lease.unit}")

    async def _publish(self, routed: Sequence[Routed], parts: Any = None) -> None:
        for subject, events in _by_subject(routed).items():
            broker = self.broker if parts is None else parts.for_subject(subject)
            await broker.apublish_many(subject, events)

    async def commit(self, lease: Lease, checkpoint: Checkpoint, outputs: Sequence[Routed]) -> None:
        # The outbox keeps each output with the subject it goes to (the one it carries).
        outputs = [(s, e if e.subject == s else e.replace(subject=s)) for s, e in outputs]
        checkpoint.outbox = [event.encode() for _, event in outputs]
        new = await self._cas(f"ckpt.{lease.unit}", checkpoint.encode(), lease.token)
        if new is None:
            raise Fenced(f"{lease.unit}: claimed by another member")
        lease.token = new
        if outputs:
            await self._publish(outputs)

    async def route(self, lease: Lease, checkpoint: Checkpoint, routed: Sequence[Routed]) -> None:
        # Before the commit: a crash in between republishes, and the ids drop the repeats.
        # A fenced router publishes only events the next router publishes too (same ids).
        await self._publish(routed, self.parts)
        new = await self._cas(f"ckpt.{lease.unit}", checkpoint.encode(), lease.token)
        if new is None:
            raise Fenced(f"{lease.unit}: claimed by another member")
        lease.token = new

    async def owners(self, units: Sequence[str]) -> dict[str, str]:
        found = await asyncio.gather(*(self._get(f"lease.{u}") for u in units))
        now = time.time()
        owners = {}
        for unit, (raw, _) in zip(units, found, strict=True):
            if raw:
                held = orjson.loads(raw)
                if held.get("until", 0) > now:
                    owners[unit] = held["member"]
        return owners

    async def checkpoint(self, unit: str) -> Checkpoint | None:
        return Checkpoint.decode((await self._get(f"ckpt.{unit}"))[0])

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # a dead connection is closed enough
                await self._nc.close()
        self._nc = self._js = self._kv = None

    async def drop(self) -> None:
        await self._store()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_key_value(self.bucket)
        await self.parts.drop(1)
        await self.close()

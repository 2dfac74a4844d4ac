"""A keyed worker group's leases and checkpoints in JetStream: a KV bucket, an object store.

Storage layout, for input stream ``S`` and group ``G`` (names made valid with ``_``):

- KV bucket ``rx_S_G`` (history 1):

  - ``members``: ``{member: until}`` (wall-clock seconds), rewritten by compare-and-set;
  - ``lease.<unit>``: ``{"member", "until"}``; acquired when absent, expired or already
    ours, renewed and released by compare-and-set on the revision we last wrote;
  - ``ckpt.<unit>``: the :class:`~.partitions.Checkpoint` itself when it fits in one message
    (the server's ``max_payload``, 1 MB by default, less 4 KB of headroom), else a pointer
    ``{"object": "<unit>.<token>.<random>", "size": n}`` to an object holding it. Claiming
    rewrites the record as it is, and the new revision is the owner's fencing token: every
    commit is ``update(last=token)``, so after a claim an earlier owner's commit fails
    (:class:`~.leases.Fenced`).

- Object store ``rxo_S_G`` (JetStream stream ``OBJ_rxo_S_G``, created on the first large
  checkpoint): checkpoints too large for the KV record. A large commit writes the object
  under a name of its own first, then compare-and-sets the pointer with the fencing token,
  then deletes the object the previous record pointed to. A reader sees the old checkpoint
  or the new one, never a mix: the pointer flips in one KV write, and an object is never
  rewritten in place. A fenced commit deletes the object it wrote; a crash between the
  object and the pointer leaves an orphan, which the next claim deletes (objects named with
  a token older than the claim's, other than the one the record points to: no later owner
  can have written them). Past :data:`~.leases.MAX_CHECKPOINT_BYTES` nothing is written
  (:class:`~.leases.CheckpointTooLarge`).

- Partition logs (:mod:`.partition_logs`): streams ``S_G_parts_<n>``; after each commit the
  owner purges its partition's stream up to the checkpointed sequence (the entry itself is
  kept, so the stream's first sequence never passes a stored checkpoint).

Outputs cannot be written atomically with a KV key, so they go in the checkpoint's *outbox*
and are published after the commit under their deterministic ids (``Nats-Msg-Id``); whoever
claims the unit next publishes the outbox again and the stream's duplicate window (2 minutes)
drops what was already stored. An outbox republished more than the duplicate window after
it was first published would be stored twice.

Wall-clock expiry: members must have clocks within a fraction of the lease period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson

from streams import Event, Position

from .leases import MAX_CHECKPOINT_BYTES, Fenced, Lease, Routed, check_size
from .partitions import ROUTER, Checkpoint

__all__ = ["NatsState", "pointed"]

log = logging.getLogger(__name__)
_CAS_ATTEMPTS = 50
_HEADROOM = 4096  # the KV subject and headers travel in the same message as the record
_POINTER = b'{"object":'  # how a pointer record starts (a Checkpoint starts '{"v":')
_READ_ATTEMPTS = 3  # a reader racing a commit that deletes the object it was pointed to
_READ_RATE = 2 * 2**20  # bytes/s an object read is allowed at least, before we give up


def bucket_name(stream: str, group: str, prefix: str = "rx") -> str:
    """A valid KV (or object store) bucket name for ``group`` on ``stream``.

    >>> bucket_name("chat", "room.counts"), bucket_name("chat", "g", "rxo")
    ('rx_chat_room_counts', 'rxo_chat_g')
    """
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{prefix}_{stream}_{group}")


def pointer(name: str, size: int) -> bytes:
    """The KV record of a checkpoint stored as object ``name`` (``size`` bytes)."""
    return orjson.dumps({"object": name, "size": size})


def pointed(raw: bytes | None) -> str | None:
    """The object a checkpoint record points to; ``None`` for a checkpoint kept inline.

    >>> pointed(pointer("p0.7.ab12", 9)), pointed(Checkpoint().encode()), pointed(None)
    ('p0.7.ab12', None, None)
    """
    if not raw or not raw.startswith(_POINTER):
        return None
    return str(orjson.loads(raw)["object"])


def stale_object(name: str, unit: str, token: int, keep: str | None) -> bool:
    """Whether object ``name`` is a leftover of ``unit`` once it is claimed with ``token``:
    written under an older token (a crash or a fenced commit) and not the one in use.

    >>> stale_object("p1.5.aa", "p1", 9, None), stale_object("p1.5.aa", "p1", 9, "p1.5.aa")
    (True, False)
    >>> stale_object("p1.12.aa", "p1", 9, None), stale_object("p10.5.aa", "p1", 9, None)
    (False, False)
    """
    owner, _, rest = name.partition(".")
    written = rest.partition(".")[0]
    return owner == unit and written.isdigit() and int(written) < token and name != keep


def _by_subject(routed: Sequence[Routed]) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = {}
    for subject, event in routed:
        groups.setdefault(subject, []).append(event)
    return groups


class NatsState:
    """:class:`~.leases.StateStore` on a JetStream KV bucket beside ``broker``'s stream.

    ``inline_limit`` (bytes; default: the server's ``max_payload`` less 4 KB) is the largest
    checkpoint kept in the KV record itself; ``max_checkpoint`` the largest written at all.
    """

    def __init__(
        self,
        broker: Any,
        group: str,
        parts: Any,
        inline_limit: int | None = None,
        max_checkpoint: int = MAX_CHECKPOINT_BYTES,
        owns_parts: bool = False,
    ) -> None:
        self.broker = broker
        self.parts = parts  # PartitionLogs: where routed events go
        self.owns_parts = owns_parts  # close() closes them (state_store made them)
        self.group = group
        self.bucket = bucket_name(broker.stream, group)
        self.objects_bucket = bucket_name(broker.stream, group, "rxo")
        self.inline_limit = inline_limit
        self.max_checkpoint = max_checkpoint
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._objects: Any = None
        self._current: dict[str, str | None] = {}  # unit -> object our last record names
        self._trimmed: dict[str, int] = {}  # unit -> partition log purged below this
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

    async def _object_store(self, create: bool) -> Any | None:
        """The object store of large checkpoints (``None``: none yet and ``create`` off)."""
        if self._objects is None:
            await self._store()
            try:
                self._objects = await self._js.object_store(self.objects_bucket)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    return None
                self._objects = await self._js.create_object_store(self.objects_bucket)
        return self._objects

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
            # The record is rewritten as it is: a pointer keeps pointing to the same object,
            # which nobody deletes once this write has fenced its writer.
            new = await self._cas(key, raw or Checkpoint().encode(), rev)
            if new is not None:
                lease.token = new
                found = await self._load(raw)
                self._current[lease.unit] = pointed(raw)
                await self._sweep(lease.unit, new, pointed(raw))
                if found is not None and found.outbox:
                    outbox = [Event.decode(raw_event) for raw_event in found.outbox]
                    await self._publish([(e.subject or "", e) for e in outbox])
                return found
        raise RuntimeError(f"{self.bucket}: cannot claim {lease.unit}")

    async def _load(self, raw: bytes | None) -> Checkpoint | None:
        """The checkpoint a KV record holds, or the one in the object it points to.

        Raises ``ObjectNotFoundError`` when the object is gone, or stops arriving (nats-py
        waits forever for the chunks of an object deleted while it reads them)."""
        name = pointed(raw)
        if raw is None or name is None:
            return Checkpoint.decode(raw)
        objects = await self._object_store(create=False)
        missing = nats.js.errors.ObjectNotFoundError(description=f"checkpoint object {name}")
        if objects is None:
            raise missing
        wait = self.broker.timeout + int(orjson.loads(raw)["size"]) / _READ_RATE
        try:
            found = await asyncio.wait_for(objects.get(name), wait)
        except TimeoutError:
            raise missing from None
        return Checkpoint.decode(found.data)

    async def _sweep(self, unit: str, token: int, keep: str | None) -> None:
        """Delete the objects of ``unit`` that earlier owners left behind (best effort)."""
        objects = await self._object_store(create=False)
        if objects is None:
            return
        try:
            infos = await objects.list(ignore_deletes=True)
        except nats.js.errors.NotFoundError:
            return
        for info in infos:
            if stale_object(info.name, unit, token, keep):
                await self._forget(info.name)

    async def _forget(self, name: str) -> None:
        objects = await self._object_store(create=False)
        if objects is None:
            return
        try:
            await objects.delete(name)
        except Exception as exc:  # a leftover the next claim deletes
            log.warning("%s: could not delete checkpoint object %s (%r)", self.bucket, name, exc)

    async def _limit(self) -> int:
        if self.inline_limit is not None:
            return self.inline_limit
        await self._store()
        return int(self._nc.max_payload) - _HEADROOM

    async def _write(self, lease: Lease, raw: bytes) -> None:
        """Store ``raw`` as ``lease.unit``'s checkpoint, fenced by ``lease.token``: inline, or
        as a new object and then the pointer to it; raises :class:`~.leases.Fenced`."""
        check_size(lease.unit, len(raw), self.max_checkpoint)
        name: str | None = None
        value = raw
        if len(raw) > await self._limit():
            name = f"{lease.unit}.{lease.token}.{os.urandom(4).hex()}"
            objects = await self._object_store(create=True)
            assert objects is not None
            await objects.put(name, raw)
            value = pointer(name, len(raw))
        new = await self._cas(f"ckpt.{lease.unit}", value, lease.token)
        if new is None:
            if name is not None:
                await self._forget(name)
            raise Fenced(f"{lease.unit}: claimed by another member")
        lease.token = new
        old, self._current[lease.unit] = self._current.get(lease.unit), name
        if old is not None and old != name:
            await self._forget(old)

    async def _publish(self, routed: Sequence[Routed], parts: Any = None) -> None:
        for subject, events in _by_subject(routed).items():
            broker = self.broker if parts is None else parts.for_subject(subject)
            await broker.apublish_many(subject, events)

    async def commit(self, lease: Lease, checkpoint: Checkpoint, outputs: Sequence[Routed]) -> None:
        # The outbox keeps each output with the subject it goes to (the one it carries).
        outputs = [(s, e if e.subject == s else e.replace(subject=s)) for s, e in outputs]
        checkpoint.outbox = [event.encode() for _, event in outputs]
        await self._write(lease, checkpoint.encode())
        if outputs:
            await self._publish(outputs)
        await self._trim(lease.unit, checkpoint.position)

    async def _trim(self, unit: str, position: str | None) -> None:
        """Purge ``unit``'s partition log below the entry a stored checkpoint names (best
        effort: the next commit purges again)."""
        if not position or unit == ROUTER:
            return
        at = Position.parse(position)
        logged = self.parts.of(int(unit[1:]))
        if at.offset <= self._trimmed.get(unit, 1) or logged.epoch not in ("", at.epoch):
            return  # nothing new below it, or the log is not the one the position is in
        try:
            await self._js.purge_stream(logged.stream, seq=at.offset)
        except Exception as exc:
            log.warning("%s: could not trim %s (%r)", self.bucket, logged.stream, exc)
            return
        self._trimmed[unit] = at.offset

    async def route(self, lease: Lease, checkpoint: Checkpoint, routed: Sequence[Routed]) -> None:
        # Before the commit: a crash in between republishes, and the ids drop the repeats.
        # A fenced router publishes only events the next router publishes too (same ids).
        await self._publish(routed, self.parts)
        await self._write(lease, checkpoint.encode())

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
        for attempt in range(_READ_ATTEMPTS):
            raw, _ = await self._get(f"ckpt.{unit}")
            try:
                return await self._load(raw)
            except nats.js.errors.ObjectNotFoundError:
                if attempt == _READ_ATTEMPTS - 1:
                    raise  # a commit replaced it while we read: read the new record
        return None

    async def _stream_names(self) -> list[str]:
        names: list[str] = []
        while True:
            request = orjson.dumps({"offset": len(names)})
            reply = orjson.loads((await self._nc.request("$JS.API.STREAM.NAMES", request)).data)
            page = reply.get("streams") or []
            names += page
            if not page or len(names) >= int(reply.get("total") or 0):
                return names

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # a dead connection is closed enough
                await self._nc.close()
        self._nc = self._js = self._kv = self._objects = None
        if self.owns_parts:
            await self.parts.close()

    async def drop(self) -> None:
        await self._store()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_key_value(self.bucket)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_object_store(self.objects_bucket)
        for name in await self._stream_names():
            if self.parts.is_log(name):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self._js.delete_stream(name)
        await self.parts.close()
        await self.close()

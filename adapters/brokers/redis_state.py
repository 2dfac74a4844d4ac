"""A keyed worker group's leases and checkpoints in Redis, beside the broker's stream.

Keys, for stream ``S`` and group ``G`` (the ``{S}`` hash tag keeps them in the stream's slot):

- ``rxstreams:{S}:g:G:members``: a hash ``member -> until`` (server time, ms);
- ``rxstreams:{S}:g:G:lease:<unit>``: ``"<member>|<token>"``, set ``NX PX`` (expires alone);
- ``rxstreams:{S}:g:G:fence:<unit>``: the fencing counter; acquiring a lease ``INCR``\\ s it,
  and every commit script compares it with the token the committer holds;
- ``rxstreams:{S}:g:G:ckpt:<unit>``: the :class:`~.partitions.Checkpoint`.

Commits are single scripts, so they are atomic: a partition's outputs are appended to the
stream (``XADD`` with the broker's entry layout, ``s`` and ``e``) in the same script that
stores the checkpoint covering their inputs, and only while the fence still holds; the
router's republished events likewise, with the router's position. A replay never produces
a committed output (or partition event) again, and a fenced member's are never stored:
exactly once, with no dedupe window. The scripts touch keys of several streams, so a Redis
Cluster is not supported for keyed groups (one server, or a primary with replicas).
Outputs written this way skip the broker's retention trimming (the next publish trims).

- ``rxstreams:{S_G_parts_<n>}:log`` (and its meta keys): partition ``n``'s log, a stream of
  its own (:mod:`.partition_logs`). The commit script trims it up to the checkpointed
  entry, exactly (``XTRIM MINID``, the entry itself kept): it holds only what the stored
  checkpoint does not cover yet. The trim runs inside the fenced script, so a fenced
  member trims nothing, and the stored checkpoint only moves forward.

Size: a checkpoint is one Redis string (at most 512 MB, ``proto-max-bulk-len``) sent as a
script argument; past :data:`~.leases.MAX_CHECKPOINT_BYTES` nothing is sent
(:class:`~.leases.CheckpointTooLarge`). A multi-MB checkpoint costs one round trip of that
size; nothing is split.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from streams import Position

from .leases import MAX_CHECKPOINT_BYTES, Fenced, Lease, Routed, check_size
from .partitions import Checkpoint
from .positions import redis_id

__all__ = ["RedisState"]

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
end
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > now then
    live[#live + 1] = all[i]
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
"""

# KEYS: lease, fence. ARGV: member, ttl ms. Returns the token, or false when held by another.
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then
  local sep = string.find(held, '|', 1, true)
  if string.sub(held, 1, sep - 1) ~= ARGV[1] then return false end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(held, sep + 1))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
"""

# KEYS: lease, fence. ARGV: member|token, ttl ms ('' releases), token. A lease that
# expired while nobody took it (the fence still holds our token) is set again.
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] then
  if held or redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
  if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
  return 1
end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS: fence, ckpt, output log, partition log. ARGV: token, checkpoint, the checkpoint's
# entry id in the partition log ('' = none), then subject/payload pairs. The partition
# log's entries before the checkpointed one are trimmed (exactly: a commit removes at most
# one checkpoint interval of entries): nobody reads them again.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[3], '*', 's', ARGV[i], 'e', ARGV[i + 1])
end
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('XTRIM', KEYS[4], 'MINID', ARGV[3]) end
return 1
"""

# KEYS: fence, ckpt, then the logs written. ARGV: token, checkpoint, then log index/subject/
# payload triples. Atomic with the router's position: a replay never republishes anything.
_ROUTE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 3 do
  redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', 's', ARGV[i + 1], 'e', ARGV[i + 2])
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisState:
    """:class:`~.leases.StateStore` in Redis keys beside ``broker``'s stream."""

    def __init__(
        self,
        broker: Any,
        group: str,
        parts: Any,
        max_checkpoint: int = MAX_CHECKPOINT_BYTES,
        owns_parts: bool = False,
    ) -> None:
        self.broker = broker
        self.max_checkpoint = max_checkpoint
        self.parts = parts  # PartitionLogs: where routed events go
        self.owns_parts = owns_parts  # close() closes them (state_store made them)
        self.group = group
        self.prefix = f"rxstreams:{{{broker.stream}}}:g:{group}:"
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aioredis.Redis.from_url(self.broker.url, socket_connect_timeout=2.0)
            for name, source in (
                ("heartbeat", _HEARTBEAT),
                ("acquire", _ACQUIRE),
                ("renew", _RENEW),
                ("commit", _COMMIT),
                ("route", _ROUTE),
            ):
                self._scripts[name] = self._client.register_script(source)
        return self._client

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        _ = self.client
        return self._scripts[name](keys=keys, args=args)

    def _key(self, kind: str, unit: str = "") -> str:
        return f"{self.prefix}{kind}:{unit}" if unit else f"{self.prefix}{kind}"

    async def heartbeat(self, member: str, ttl: float) -> list[str]:
        live = await self._run("heartbeat", [self._key("members")], [member, int(ttl * 1000)])
        return sorted(_text(m) for m in live)

    async def leave(self, member: str) -> None:
        await self._run("heartbeat", [self._key("members")], [member, ""])

    async def acquire(self, unit: str, member: str, ttl: float) -> Lease | None:
        keys = [self._key("lease", unit), self._key("fence", unit)]
        token = await self._run("acquire", keys, [member, int(ttl * 1000)])
        return None if token is None else Lease(unit, member, int(token))

    async def renew(self, lease: Lease, ttl: float) -> bool:
        keys = [self._key("lease", lease.unit), self._key("fence", lease.unit)]
        held = f"{lease.member}|{lease.token}"
        ok = await self._run("renew", keys, [held, int(ttl * 1000), lease.token])
        return int(ok) == 1

    async def release(self, lease: Lease) -> None:
        keys = [self._key("lease", lease.unit), self._key("fence", lease.unit)]
        await self._run("renew", keys, [f"{lease.member}|{lease.token}", "", lease.token])

    async def claim(self, lease: Lease) -> Checkpoint | None:
        # Acquiring already fenced the earlier owners (INCR); check we still hold it.
        fence = await self.client.get(self._key("fence", lease.unit))
        if fence is None or int(fence) != lease.token:
            raise Fenced(f"{lease.unit}: claimed by another member")
        return await self.checkpoint(lease.unit)

    def _keys(self, unit: str, log: str) -> list[str]:
        return [self._key("fence", unit), self._key("ckpt", unit), log]

    async def commit(self, lease: Lease, checkpoint: Checkpoint, outputs: Sequence[Routed]) -> None:
        done = ""
        if checkpoint.position:
            done = redis_id(Position.parse(checkpoint.position).offset)
        raw = checkpoint.encode()
        check_size(lease.unit, len(raw), self.max_checkpoint)
        args: list[Any] = [lease.token, raw, done]
        for subject, event in outputs:
            args += [subject, event.encode()]
        keys = self._keys(lease.unit, self.broker.log_key)
        keys.append(self.parts.of(int(lease.unit[1:])).log_key)
        if not await self._run("commit", keys, args):
            raise Fenced(f"{lease.unit}: claimed by another member")

    async def route(self, lease: Lease, checkpoint: Checkpoint, routed: Sequence[Routed]) -> None:
        args: list[Any] = [lease.token, checkpoint.encode()]
        keys = [self._key("fence", lease.unit), self._key("ckpt", lease.unit)]
        index: dict[str, int] = {}
        for subject, event in routed:
            log = self.parts.for_subject(subject).log_key
            if log not in index:
                keys.append(log)
                index[log] = len(keys)  # Lua indexes from 1
            args += [index[log], subject, event.encode()]
        if not await self._run("route", keys, args):
            raise Fenced(f"{lease.unit}: claimed by another member")

    async def owners(self, units: Sequence[str]) -> dict[str, str]:
        values = await self.client.mget([self._key("lease", u) for u in units])
        return {
            unit: _text(v).rpartition("|")[0]
            for unit, v in zip(units, values, strict=True)
            if v is not None
        }

    async def checkpoint(self, unit: str) -> Checkpoint | None:
        return Checkpoint.decode(await self.client.get(self._key("ckpt", unit)))

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # a dead connection is closed enough
                await self._client.aclose()
        self._client = None
        if self.owns_parts:
            await self.parts.close()

    async def drop(self) -> None:
        keys = [k async for k in self.client.scan_iter(match=self.prefix + "*", count=1000)]
        logs = f"rxstreams:{{{self.parts.base}_*"  # every partition's log and meta
        keys += [k async for k in self.client.scan_iter(match=logs, count=1000)]
        for i in range(0, len(keys), 500):
            await self.client.delete(*keys[i : i + 500])
        await self.parts.close()
        await self.close()

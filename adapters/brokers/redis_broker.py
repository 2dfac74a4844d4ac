"""RedisBroker: the Broker protocol on one Redis stream (redis-py asyncio).

Layout, for a stream named ``S`` (the braces keep both keys in one cluster slot):

- ``rxstreams:{S}:log``: the stream; each entry holds ``s`` (subject) and ``e`` (event JSON).
- ``rxstreams:{S}:meta``: a hash with the ``epoch`` and ``trimmed``, the offset of the newest
  entry retention removed.

Positions are ``<epoch>-<offset>`` with ``offset = ms << 20 | seq`` of the entry id (see
:mod:`.positions`). The epoch is created beside the stream by a Lua script; when the
stream vanished (``FLUSHALL``, a restart of a Redis that keeps nothing on disk, ``DEL``)
the next publish or read starts a new epoch, and old positions get a gap.

Retention: ``max_events`` trims exactly (``MAXLEN =``) and ``max_age`` trims by entry time
(``MINID``), both inside the publish script, which records what they removed so a gap is
reported exactly when events after ``since`` are gone. ``max_bytes`` and
``max_per_subject`` have no Redis equivalent on a single stream and are ignored.

Each live subscription holds one pooled connection while it waits (``XREAD BLOCK``);
the pool is capped at ``max_connections`` and callers beyond it wait for a connection.
Pattern filtering happens client side with :func:`streams.match` on each entry's subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams import Event, GapError, Position, Retention, match, validate_pattern, validate_subject

from .backoff import Backoff
from .errors import PublishError
from .feed import Emit, TaskFeeds, raise_if_cancelled
from .follow import FollowingBroker
from .livestart import LiveStarts, Pin
from .positions import check_since, redis_id, redis_offset
from .url import BrokerSettings

__all__ = ["RedisBroker"]

log = logging.getLogger(__name__)
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)

# Returns the epoch, creating stream and epoch together when the stream is missing.
_ENSURE = """
local function ensure()
  local epoch = redis.call('HGET', KEYS[2], 'epoch')
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[1], 'rx-anchor', '$', 'MKSTREAM')
    redis.call('XGROUP', 'DESTROY', KEYS[1], 'rx-anchor')
    epoch = false
  end
  if not epoch then
    epoch = ARGV[1]
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[2], 'epoch', epoch, 'trimmed', '0-0')
  end
  return epoch
end
"""

# ARGV: new epoch, max events ('' = none), max age ms ('' = none), subject, payloads...
# One script, so a batch is atomic: no other command runs in between, and Redis refuses
# an out-of-memory script at its first write, before anything is stored.
_PUBLISH = (
    _ENSURE
    + """
local epoch = ensure()
local ids = {}
for i = 5, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 's', ARGV[4], 'e', ARGV[i])
end
local trimmed = false
if ARGV[2] ~= '' then
  local n = tonumber(ARGV[2])
  local len = redis.call('XLEN', KEYS[1])
  if len > n then
    local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - n)
    trimmed = old[#old][1]
    redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', n)
  end
end
if ARGV[3] ~= '' then
  local t = redis.call('TIME')
  local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
  local threshold = string.format('%.0f', min_ms) .. '-0'
  local old = redis.call('XREVRANGE', KEYS[1], '(' .. threshold, '-', 'COUNT', 1)
  if #old > 0 then
    trimmed = old[1][1]
    redis.call('XTRIM', KEYS[1], 'MINID', threshold)
  end
end
if trimmed then redis.call('HSET', KEYS[2], 'trimmed', trimmed) end
return {epoch, ids}
"""
)

# ARGV: new epoch, after id, count. Returns epoch, trimmed, last id, entries after `after`.
_READ = (
    _ENSURE
    + """
local epoch = ensure()
local trimmed = redis.call('HGET', KEYS[2], 'trimmed') or '0-0'
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last = '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
local entries = {}
if tonumber(ARGV[3]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
end
return {epoch, trimmed, last, entries}
"""
)


def _new_epoch() -> str:
    return os.urandom(4).hex()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBroker(FollowingBroker):
    """Events in a Redis stream, shared by every process that names the same stream.

    >>> async def demo():  # doctest: +SKIP
    ...     broker = RedisBroker("redis://127.0.0.1:6379/0", stream="chat")
    ...     pos = await broker.apublish("chat.lobby.msg", {"text": "hi"})
    ...     await broker.close()
    ...     return pos.offset > 0
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        stream: str = "rxstreams",
        retention: Retention | None = None,
        ack_wait: float = 30.0,
        batch: int = 512,
        block: float = 5.0,
        max_connections: int = 512,
    ) -> None:
        self.url = url
        self.stream = stream
        self.retention = retention or Retention()
        self.ack_wait = ack_wait
        self.batch = batch
        self.block = block
        self.max_connections = max_connections
        prefix = f"rxstreams:{{{stream}}}"
        self.log_key = f"{prefix}:log"
        self.meta_key = f"{prefix}:meta"
        self._client: Any = None  # redis.asyncio.Redis; replies are typed loosely
        self._publish_script: Any = None
        self._read_script: Any = None
        self._epoch = ""
        self._feeds = TaskFeeds()
        self._live = LiveStarts()

    @classmethod
    def from_settings(cls, settings: BrokerSettings) -> RedisBroker:
        return cls(settings.server, settings.stream, settings.retention, settings.ack_wait)

    # -- connection ---------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The redis-py client, created on first use (it reconnects by itself)."""
        if self._client is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=20,
                socket_connect_timeout=2.0,
                health_check_interval=10,
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._publish_script = self._client.register_script(_PUBLISH)
            self._read_script = self._client.register_script(_READ)
        return self._client

    async def connect(self) -> RedisBroker:
        """Check the server answers and learn the epoch."""
        await self._read(0, 0)
        return self

    @property
    def epoch(self) -> str:
        """The epoch last seen from the server ("" before the first round trip)."""
        return self._epoch

    async def last_position(self) -> Position:
        """Where the stream ends now (its last generated entry id), asked of the server."""
        epoch, _, last, _ = await self._read(0, 0)
        return Position(epoch, last)

    async def _read(self, after: int, count: int) -> tuple[str, int, int, list[Any]]:
        _ = self.client
        epoch, trimmed, last, entries = await self._read_script(
            keys=[self.log_key, self.meta_key], args=[_new_epoch(), redis_id(after), count]
        )
        self._epoch = _text(epoch)
        return self._epoch, redis_offset(trimmed), redis_offset(last), entries

    # -- publishing ---------------------------------------------------------------
    async def apublish(self, subject: str, event: Event | Any) -> Position:
        """Append to the stream; returns the position once Redis stored it.

        Raises :class:`~adapters.brokers.errors.PublishError` for any broker-side failure
        (no answer, out of memory, a refused script): the event may not be stored.
        """
        return (await self.apublish_many(subject, [event]))[0]

    async def apublish_many(self, subject: str, events: Sequence[Event | Any]) -> list[Position]:
        """Append a batch atomically (one script): all of it is stored, or nothing.

        Positions increase and nothing else lands between them. An event that cannot be
        encoded raises :class:`~streams.EventError` before anything is sent; a broker-side
        failure raises :class:`~adapters.brokers.errors.PublishError` with ``committed``
        empty (when the connection dropped mid-call the batch may or may not be stored).
        """
        validate_subject(subject)
        payloads = [(e if isinstance(e, Event) else Event.create(e)).encode() for e in events]
        if not payloads:
            return []
        r = self.retention
        max_age_ms = "" if not r.max_age else str(int(r.max_age * 1000))
        _ = self.client
        with self._live.publishing() as note:
            try:
                epoch, entry_ids = await self._publish_script(
                    keys=[self.log_key, self.meta_key],
                    args=[_new_epoch(), r.max_events or "", max_age_ms, subject, *payloads],
                )
            except (RedisError, OSError) as exc:
                what = f"{len(payloads)} events" if len(payloads) > 1 else "publish"
                raise PublishError(
                    f"{what} to {subject!r} not acknowledged by Redis: {exc}"
                ) from exc
            self._epoch = _text(epoch)
            positions = [Position(self._epoch, redis_offset(i)) for i in entry_ids]
            note(positions)
        return positions

    # -- reading ------------------------------------------------------------------
    def _decode(self, entry: Any, epoch: str, pattern: str) -> Event | None:
        entry_id, fields = entry
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        subject = _text(fields[b"s"])
        if not match(pattern, subject):
            return None
        return Event.decode(fields[b"e"]).stamped(subject, f"{epoch}-{redis_offset(entry_id)}")

    async def _earliest(self, pattern: str, epoch: str, last: int) -> Position | None:
        after = 0
        for _ in range(20):  # bounded scan; beyond it the log-wide first entry is named
            page = await self.client.xrange(self.log_key, f"({redis_id(after)}", "+", count=500)
            if not page:
                break
            for entry_id, fields in page:
                if match(pattern, _text(fields[b"s"])):
                    return Position(epoch, redis_offset(entry_id))
            after = redis_offset(page[-1][0])
        else:
            first = await self.client.xrange(self.log_key, "-", "+", count=1)
            if first:
                return Position(epoch, redis_offset(first[0][0]))
        return Position(epoch, last + 1) if last else None

    async def _gap(self, since: Position, pattern: str) -> tuple[GapError | None, int]:
        epoch, trimmed, last, _ = await self._read(since.offset, 0)
        gap = check_since(since, epoch, last, trimmed, None)
        if gap is not None:
            gap = GapError(since, await self._earliest(pattern, epoch, last), gap.reason)
        return gap, last

    async def _follow(
        self, pattern: str, since: Position | None, emit: Emit, pin: Pin | None = None
    ) -> None:
        backoff = Backoff()
        pos = since
        checked = False
        while True:
            raise_if_cancelled()
            try:
                if pos is None:
                    epoch, _, last, _ = await self._read(0, 0)
                    live = Position(epoch, last)
                    pos = await pin.start(live) if pin is not None else live
                    checked = True  # a lowered start is checked by the read below
                if not checked:
                    gap, _ = await self._gap(pos, pattern)
                    if gap is not None:
                        raise gap
                    checked = True
                epoch, trimmed, _, entries = await self._read(pos.offset, self.batch)
                if epoch != pos.epoch or trimmed > pos.offset:
                    gap, _ = await self._gap(pos, pattern)
                    if gap is not None:
                        raise gap
                backoff.reset()
                if entries:
                    for entry in entries:
                        event = self._decode(entry, epoch, pattern)
                        pos = Position(epoch, redis_offset(entry[0]))
                        if event is not None:
                            emit(event)
                    continue
                # Nothing new: wait for the next entry, then read it atomically above.
                raise_if_cancelled()
                await self.client.xread(
                    {self.log_key: redis_id(pos.offset)}, count=1, block=int(self.block * 1000)
                )
            except _TRANSIENT as exc:
                log.info("subscription %s: %r; resuming", pattern, exc)
                checked = False  # history may have moved on while we were away
                await asyncio.sleep(backoff.next())

    # -- competing consumers ------------------------------------------------------
    async def consume(
        self,
        group: str,
        pattern: str,
        handle: Callable[[list[Event]], Awaitable[None]],
        consumer: str | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Process events of ``pattern`` as one member of consumer group ``group``.

        Each batch is acknowledged (``XACK``) only after ``handle`` returned; entries
        another member left pending for ``ack_wait`` seconds are claimed (``XAUTOCLAIM``).
        A new group starts at the oldest retained event. Runs until ``stop`` is set;
        an exception from ``handle`` ends it, leaving the batch for other members.
        """
        validate_pattern(pattern)
        name = consumer or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
        stop = stop or asyncio.Event()
        backoff = Backoff()
        idle_ms = int(self.ack_wait * 1000)
        next_claim = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            raise_if_cancelled()
            try:
                epoch, *_ = await self._read(0, 0)
                with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                    await self.client.xgroup_create(self.log_key, group, id="0")
                entries: list[Any] = []
                if loop.time() >= next_claim:
                    _, entries, *_ = await self.client.xautoclaim(
                        self.log_key, group, name, idle_ms, "0-0", count=self.batch
                    )
                    if not entries:
                        next_claim = loop.time() + self.ack_wait / 4
                if not entries:
                    reply = await self.client.xreadgroup(
                        group, name, {self.log_key: ">"}, count=self.batch, block=1000
                    )
                    entries = reply[0][1] if reply else []
                backoff.reset()
                if not entries:
                    continue
                events = [e for e in (self._decode(x, epoch, pattern) for x in entries) if e]
                if events:
                    await handle(events)
                await self.client.xack(self.log_key, group, *[x[0] for x in entries])
            except _TRANSIENT as exc:
                log.warning("worker %s: %r; reconnecting", group, exc)
                await asyncio.sleep(backoff.next())

    async def drop(self) -> None:
        """Delete the stream and its metadata (tests and tear-down; never FLUSHALL)."""
        await self.client.delete(self.log_key, self.meta_key)

    async def close(self) -> None:
        """Complete every subscriber and close the connection pool."""
        await self._feeds.close()
        if self._client is not None:
            with contextlib.suppress(Exception):  # a dead connection is closed enough
                await self._client.aclose()
            self._client = None

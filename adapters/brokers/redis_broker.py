"""RedisBroker: the Broker protocol on one Redis stream (redis-py asyncio).

Layout, for a stream named ``S`` (the braces keep both keys in one cluster slot):

- ``rxstreams:{S}:log``: the stream; each entry holds ``s`` (subject) and ``e`` (event JSON).
- ``rxstreams:{S}:meta``: a hash with the ``epoch`` and ``trimmed``, the offset of the newest
  entry retention removed.

Positions are ``<epoch>-<offset>`` with ``offset = ms << 20 | seq`` of the entry id (see
:mod:`.positions`). The epoch is created beside the stream by a Lua script (:meth:`connect`
does it at startup, so outside producers can ``XADD`` at once); when the stream vanished
(``FLUSHALL``, a restart of a Redis that keeps nothing on disk, ``DEL``) the next publish or
read starts a new epoch, and old positions get a gap.

Other producers may write to the stream with plain redis-py or ``redis-cli``: what their
entries become (an event, or skipped and counted in :attr:`RedisBroker.skipped`) is decided
in :mod:`.redis_decisions`. A subscription or worker never ends because of such an entry.

Retention: ``max_events`` trims exactly (``MAXLEN =``) and ``max_age`` trims by entry time
(``MINID``), both inside the publish script, which records what they removed so a gap is
reported exactly when events after ``since`` are gone. ``max_bytes`` and
``max_per_subject`` have no Redis equivalent on a single stream: they are refused at
construction (:class:`~.redis_decisions.UnsupportedRetention`, a ``ValueError``), and the
default retention here is ``Retention(max_per_subject=None)``.

Reading: a subscription replays and then follows with one ``XREAD BLOCK`` pipelined with an
``HMGET`` of the meta hash; the entries are delivered straight from that reply unless the
meta shows a new epoch or a trim past the subscriber's position, in which case the read
script decides atomically (:func:`~.redis_decisions.reply_is_complete`). A reader behind
the end of the log (replaying, or a full batch came back) reads with the scan script
instead: epoch, trim and the next batch in one atomic reply, the entries as one JSON text
(entries that are not UTF-8 fall back to the read script). Entries laid out as rxstreams
writes them (``s``, ``e``) are read in place, and events rxstreams wrote are built once
(:func:`~.foreign.read_entry`).

Connections: commands (publishes, scripts) use one pool, blocking reads (each live
subscription holds a connection while it waits) another, each capped at
``max_connections``; readers beyond the cap wait for a connection, publishes never wait
behind readers. Publishes, scans and blocking reads are sent straight on connections of
those pools (:class:`_Direct`), without redis-py's per-command layers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams import Event, GapError, Position, Retention, match, validate_pattern, validate_subject

from .backoff import reconnect_backoff
from .errors import PublishError
from .feed import Emit, TaskFeeds, raise_if_cancelled
from .follow import FollowingBroker
from .foreign import SkippedEntries, UnreadableEntry, read_entry
from .livestart import LiveStarts, Pin
from .positions import SEQ_BITS, check_since, redis_offset
from .redis_decisions import (
    EVENT,
    SUBJECT,
    check_retention,
    cursor,
    entry_offset,
    fields_dict,
    read_fields,
    reply_is_complete,
    subject_of,
)
from .url import BrokerSettings

__all__ = ["RedisBroker"]

log = logging.getLogger(__name__)
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_HEALTH_TIMEOUT = 2.0
_SPARE = 16  # connections beyond max_connections for rare commands (health, acks, drop)
_NOTED = 4096  # unreadable positions remembered, so each is counted once per broker

# Returns the epoch, creating stream and epoch together when the stream is missing.
# ARGV[1] is this broker's epoch prefix; the server clock makes each new epoch unique
# (a stream that vanishes twice never gets the same epoch back).
_ENSURE = """
local function ensure()
  local epoch = redis.call('HGET', KEYS[2], 'epoch')
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[1], 'rx-anchor', '$', 'MKSTREAM')
    redis.call('XGROUP', 'DESTROY', KEYS[1], 'rx-anchor')
    epoch = false
  end
  if not epoch then
    local t = redis.call('TIME')
    local us = (tonumber(t[1]) * 1000000 + tonumber(t[2])) % 16777216
    epoch = ARGV[1] .. string.format('%06x', us)
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[2], 'epoch', epoch, 'trimmed', '0-0')
  end
  return epoch
end
"""

# ARGV: epoch prefix, max events ('' = none), max age ms ('' = none), subject, payloads...
# One script, so a batch is atomic: no other command runs in between, and Redis refuses
# an out-of-memory script at its first write, before anything is stored. Returns one
# string, "<epoch> <id> <id> ...": one bulk reply parses much faster than nested arrays.
_PUBLISH = (
    _ENSURE
    + """
local epoch = ensure()
local ids = {}
for i = 5, #ARGV do
  local id = redis.call('XADD', KEYS[1], '*', 's', ARGV[4], 'e', ARGV[i])
  local dash = string.find(id, '-', 1, true)
  if #id - dash > 6 and tonumber(string.sub(id, dash + 1)) > 1048575 then
    -- another producer pushed this millisecond's sequence past what a position holds
    redis.call('XDEL', KEYS[1], id)
    local ms = string.sub(id, 1, dash - 1)
    id = redis.call('XADD', KEYS[1], string.format('%.0f', tonumber(ms) + 1) .. '-0',
                    's', ARGV[4], 'e', ARGV[i])
  end
  ids[#ids + 1] = id
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
return epoch .. ' ' .. table.concat(ids, ' ')
"""
)

# ARGV: epoch prefix, after id, count.
# Returns epoch, trimmed, last id, entries after `after`, length.
_READ = (
    _ENSURE
    + """
local epoch = ensure()
local trimmed = redis.call('HGET', KEYS[2], 'trimmed') or '0-0'
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last = '0-0'
local length = 0
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'length' then length = info[i + 1] end
end
local entries = {}
if tonumber(ARGV[3]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
end
return {epoch, trimmed, last, entries, length}
"""
)


# ARGV: epoch prefix, after id, count. Returns epoch, trimmed and the entries after `after`
# as one JSON text ([[id, [field, value, ...]], ...]): one bulk reply that orjson reads at
# once, instead of seven RESP replies per entry for redis-py to parse. (Entries that are
# not UTF-8 make invalid JSON; the caller then reads them with the read script.)
_SCAN = (
    _ENSURE
    + """
local epoch = ensure()
local trimmed = redis.call('HGET', KEYS[2], 'trimmed') or '0-0'
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
if #entries == 0 then return {epoch, trimmed, '[]'} end
return {epoch, trimmed, cjson.encode(entries)}
"""
)


def _ignore(positions: Sequence[Position]) -> None:
    return None


_UNCOUNTED = contextlib.nullcontext(_ignore)


def _group_lost(exc: ResponseError) -> bool:
    """The stream (and with it the group) vanished: ``NOGROUP``, or a blocked
    ``XREADGROUP`` told "UNBLOCKED the stream key no longer exists"."""
    text = str(exc)
    return "NOGROUP" in text or "no longer exists" in text


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Direct:
    """Commands sent straight on connections made by a redis-py pool, kept in a free
    list: no pool lock, no per-command retry wrapper, observability hooks or reply
    callbacks (together they cost about as much as the round trip itself). Replies
    come back unparsed. Concurrency is capped by the caller (the broker's semaphores).
    A failed connection is dropped and made again on next use, like the pool does;
    nothing is retried (the pool's connections do not retry either)."""

    def __init__(self) -> None:
        self.pool: Any = None  # set when the broker makes its client
        self.idle: list[Any] = []
        self.made: set[Any] = set()

    async def send(self, *commands: tuple[Any, ...]) -> list[Any]:
        """The replies to ``commands``, sent in one write on one connection."""
        idle = self.idle
        conn = idle.pop() if idle else self.pool.make_connection()
        last = len(commands) - 1
        replies: list[Any] = []
        try:
            await self.pool.ensure_connection(conn)  # (re)connects a dropped connection
            packed = conn.pack_command(*commands[0]) if not last else conn.pack_commands(commands)
            await conn.send_packed_command(packed, check_health=False)
            # Python 3.11's wait_for (redis-py sends under one) can swallow a cancellation
            # that lands as the send completes: do not then wait for a blocking read.
            raise_if_cancelled()
            for _ in commands:
                replies.append(await conn.read_response())
        except ResponseError:
            if len(replies) < last:  # replies left unread on the connection
                await conn.disconnect(nowait=True)
            raise
        except BaseException:  # failed or cancelled mid-exchange: the connection is dirty
            await conn.disconnect(nowait=True)
            raise
        finally:
            idle.append(conn)
            self.made.add(conn)
        return replies

    async def close(self) -> None:
        for conn in self.made:
            with contextlib.suppress(Exception):  # a dead connection is closed enough
                await conn.disconnect()
        self.made = set()
        self.idle.clear()


def _stream_entries(reply: Any) -> list[Any]:
    """The ``[id, fields]`` entries of an unparsed one-stream ``XREAD`` reply (a RESP3
    map or a RESP2 array; none when it timed out)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]  # type: ignore[no-any-return]


class RedisBroker(FollowingBroker):
    """Events in a Redis stream, shared by every process that names the same stream.

    ``retention`` defaults to ``Retention(max_per_subject=None)``; a retention with
    ``max_bytes`` or ``max_per_subject`` raises
    :class:`~adapters.brokers.redis_decisions.UnsupportedRetention` (a ``ValueError``).
    :attr:`skipped` counts entries other producers wrote that could not be read.

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
        self.retention = check_retention(retention)
        self.ack_wait = ack_wait
        self.batch = batch
        self.block = block
        self.max_connections = max_connections
        self._block_ms = int(block * 1000)
        prefix = f"rxstreams:{{{stream}}}"
        self.log_key = f"{prefix}:log"
        self.meta_key = f"{prefix}:meta"
        self.source = f"redis://{stream}"
        self.skipped = SkippedEntries(self.source)
        self._noted: dict[Position, None] = {}
        self._subjects: set[str] = set()  # subjects already validated
        self._client: Any = None  # redis.asyncio.Redis; replies are typed loosely
        self._reader: Any = None  # a second client for blocking reads
        self._commands = _Direct()  # publishes, on the command client's connections
        self._reads = _Direct()  # blocking reads, on the reader's connections
        self._publish_script: Any = None
        self._read_script: Any = None
        self._scan_script: Any = None
        self._epoch = ""
        self._epoch_prefix = os.urandom(3).hex()  # once per broker, not per publish
        r = self.retention
        self._limits = (
            r.max_events or "",
            "" if not r.max_age else str(int(r.max_age * 1000)),
        )
        self._slots = asyncio.Semaphore(max_connections)  # scripts in flight
        self._reading = asyncio.Semaphore(max_connections)  # blocking reads in flight
        self._feeds = TaskFeeds()
        self._live = LiveStarts()

    @classmethod
    def from_settings(cls, settings: BrokerSettings) -> RedisBroker:
        return cls(settings.server, settings.stream, settings.retention, settings.ack_wait)

    # -- connection ---------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The redis-py client for commands, created on first use (it reconnects by itself)."""
        if self._client is None:
            # A plain pool (its blocking variant costs a lock and a timer per command);
            # callers beyond max_connections wait on self._slots instead of failing.
            pool = aioredis.ConnectionPool.from_url(
                self.url, max_connections=self.max_connections + _SPARE, socket_connect_timeout=2.0
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._commands.pool = pool
            self._publish_script = self._client.register_script(_PUBLISH)
            self._read_script = self._client.register_script(_READ)
            self._scan_script = self._client.register_script(_SCAN)
        return self._client

    @property
    def reader(self) -> Any:
        """The redis-py client for blocking reads (its own pool; readers beyond
        ``max_connections`` wait on ``self._reading``)."""
        if self._reader is None:
            # An XREAD BLOCK waits up to ``block`` seconds for an answer: the socket timeout
            # (redis-py's default is 5 s) must be longer, or an idle wait counts as a failure.
            pool = aioredis.ConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                socket_connect_timeout=2.0,
                socket_timeout=self.block + 5.0,
            )
            self._reader = aioredis.Redis(connection_pool=pool)
            self._reads.pool = pool
        return self._reader

    async def connect(self) -> RedisBroker:
        """Check the server answers, create the stream and its epoch if missing (so
        outside producers can ``XADD`` right away) and learn the epoch."""
        await self._read(0, 0)
        return self

    async def health(self) -> dict[str, Any]:
        """The broker's state for ``/healthz``; never raises, answers within ~2 s.

        ``{"connected", "stream", "epoch", "atomic_batch", "messages"}``, plus ``"error"``
        when the server did not answer (``connected`` is then ``False``).
        """
        state: dict[str, Any] = {
            "connected": False,
            "stream": self.stream,
            "epoch": self._epoch,
            "atomic_batch": True,
            "messages": 0,
        }
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT):
                _ = self.client
                reply = await self._read_script(
                    keys=[self.log_key, self.meta_key], args=[self._epoch_prefix, "0-0", 0]
                )
        except Exception as exc:  # health reports, it never raises
            state["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return state
        self._epoch = _text(reply[0])
        state.update(connected=True, epoch=self._epoch, messages=int(reply[4]))
        return state

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
        async with self._slots:
            epoch, trimmed, last, entries, _ = await self._read_script(
                keys=[self.log_key, self.meta_key], args=[self._epoch_prefix, cursor(after), count]
            )
        self._epoch = _text(epoch)
        return self._epoch, entry_offset(trimmed)[0], entry_offset(last)[0], entries

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
        if subject not in self._subjects:
            validate_subject(subject)
            if len(self._subjects) >= _NOTED:
                self._subjects.clear()
            self._subjects.add(subject)
        payloads = [(e if isinstance(e, Event) else Event.create(e)).encode() for e in events]
        if not payloads:
            return []
        max_events, max_age_ms = self._limits
        _ = self.client
        script = self._publish_script
        # Live subscriptions being set up count this publish (see .livestart); none: skip.
        with self._live.publishing() if len(self._live) else _UNCOUNTED as note:
            try:
                async with self._slots:
                    try:
                        (reply,) = await self._commands.send(
                            (
                                "EVALSHA",
                                script.sha,
                                2,
                                self.log_key,
                                self.meta_key,
                                self._epoch_prefix,
                                max_events,
                                max_age_ms,
                                subject,
                                *payloads,
                            )
                        )
                    except NoScriptError:  # a restarted or flushed server: load it again
                        reply = await script(
                            keys=[self.log_key, self.meta_key],
                            args=[self._epoch_prefix, max_events, max_age_ms, subject, *payloads],
                        )
            except (RedisError, OSError) as exc:
                what = f"{len(payloads)} events" if len(payloads) > 1 else "publish"
                raise PublishError(
                    f"{what} to {subject!r} not acknowledged by Redis: {exc}"
                ) from exc
            epoch, *entry_ids = reply.split()
            epoch_now = self._epoch = _text(epoch)
            positions = [Position(epoch_now, redis_offset(i)) for i in entry_ids]
            note(positions)
        return positions

    # -- reading ------------------------------------------------------------------
    def _note(self, exc: UnreadableEntry) -> None:
        """Count an unreadable entry once, however many readers of this broker met it."""
        if exc.position in self._noted:
            return
        self._noted[exc.position] = None
        if len(self._noted) > _NOTED:
            del self._noted[next(iter(self._noted))]
        self.skipped.note(exc)

    def _events(self, entries: Iterable[Any], epoch: str, pattern: str) -> list[Event]:
        """The events among ``entries`` whose subject matches ``pattern``; unreadable
        entries are noted in :attr:`skipped` and left out."""
        events: list[Event] = []
        matches: dict[str, bool] = {}
        source = self.source
        for entry_id, raw in entries:
            # Entries rxstreams wrote are exactly [s, <subject>, e, <event>]: read in place.
            if type(raw) is list and len(raw) == 4 and raw[0] == SUBJECT and raw[2] == EVENT:
                try:
                    subject: str | None = raw[1].decode()
                except (UnicodeDecodeError, AttributeError):
                    subject = None
                payload = raw[3]
                fields = None
            elif type(raw) is list and len(raw) == 4 and raw[0] == "s" and raw[2] == "e":
                subject, payload, fields = raw[1], raw[3].encode(), None  # from the scan's JSON
            else:
                if type(raw) is list and raw and type(raw[0]) is str:  # from the scan's JSON
                    raw = [x.encode() for x in raw]
                fields = fields_dict(raw)
                subject = subject_of(fields)
                payload = None
            if subject is not None:
                ok = matches.get(subject)
                if ok is None:
                    ok = matches[subject] = match(pattern, subject)
                if not ok:
                    continue
            offset, exact = entry_offset(entry_id)
            position = Position(epoch, offset)
            try:
                if not exact:
                    raise UnreadableEntry(position, f"entry id {_text(entry_id)} has no position")
                if fields is None:
                    events.append(
                        read_entry(
                            payload,
                            subject,
                            position,
                            source=source,
                            timestamp=(offset >> SEQ_BITS) / 1000,
                        )
                    )
                else:
                    events.append(read_fields(fields, subject, position, source))
            except UnreadableEntry as exc:
                self._note(exc)
        return events

    async def _earliest(self, pattern: str, epoch: str, last: int) -> Position | None:
        after = 0
        for _ in range(20):  # bounded scan; beyond it the log-wide first entry is named
            page = await self.client.xrange(self.log_key, f"({cursor(after)}", "+", count=500)
            if not page:
                break
            for entry_id, fields in page:
                subject = subject_of(fields)
                if subject is not None and match(pattern, subject):
                    return Position(epoch, entry_offset(entry_id)[0])
            after = entry_offset(page[-1][0])[0]
        else:
            first = await self.client.xrange(self.log_key, "-", "+", count=1)
            if first:
                return Position(epoch, entry_offset(first[0][0])[0])
        return Position(epoch, last + 1) if last else None

    async def _gap(self, since: Position, pattern: str) -> tuple[GapError | None, int]:
        epoch, trimmed, last, _ = await self._read(since.offset, 0)
        gap = check_since(since, epoch, last, trimmed, None)
        if gap is not None:
            gap = GapError(since, await self._earliest(pattern, epoch, last), gap.reason)
        return gap, last

    async def _next_entries(self, pos: Position, pattern: str) -> tuple[str, list[Any]]:
        """Entries after ``pos`` (waiting up to ``block`` seconds for some) and the epoch
        they belong to; raises :class:`GapError` when entries after ``pos`` are gone."""
        _ = self.reader
        async with self._reading:
            reply, meta = await self._reads.send(
                (
                    "XREAD",
                    "COUNT",
                    self.batch,
                    "BLOCK",
                    self._block_ms,
                    "STREAMS",
                    self.log_key,
                    cursor(pos.offset),
                ),
                ("HMGET", self.meta_key, "epoch", "trimmed"),
            )
        epoch, trimmed = meta
        if reply_is_complete(pos, epoch, entry_offset(trimmed or b"0-0")[0]):
            return pos.epoch, _stream_entries(reply)
        # A new epoch or a trim past pos: decide atomically with the read script.
        now, trimmed_now, _, entries = await self._read(pos.offset, self.batch)
        if now != pos.epoch or trimmed_now > pos.offset:
            gap, _ = await self._gap(pos, pattern)
            if gap is not None:
                raise gap
        return now, entries

    async def _scan(self, pos: Position, pattern: str) -> tuple[str, list[Any]]:
        """Like :meth:`_next_entries` without waiting, for a reader behind the end of the
        log (replaying): epoch, trim and entries in one atomic script reply."""
        _ = self.client
        args = (self._epoch_prefix, cursor(pos.offset), self.batch)
        async with self._slots:
            try:
                ((epoch, trimmed, packed),) = await self._commands.send(
                    ("EVALSHA", self._scan_script.sha, 2, self.log_key, self.meta_key, *args)
                )
            except NoScriptError:
                epoch, trimmed, packed = await self._scan_script(
                    keys=[self.log_key, self.meta_key], args=args
                )
        now = self._epoch = _text(epoch)
        try:
            entries = orjson.loads(packed)
        except orjson.JSONDecodeError:  # entries that are not UTF-8: read them as they are
            now, trimmed_now, _, entries = await self._read(pos.offset, self.batch)
        else:
            trimmed_now = entry_offset(trimmed)[0]
        if now != pos.epoch or trimmed_now > pos.offset:
            gap, _ = await self._gap(pos, pattern)
            if gap is not None:
                raise gap
        return now, entries

    async def _follow(
        self, pattern: str, since: Position | None, emit: Emit, pin: Pin | None = None
    ) -> None:
        backoff = reconnect_backoff()
        pos = since
        checked = False
        behind = since is not None
        while True:
            raise_if_cancelled()
            try:
                if pos is None:
                    epoch, _, last, _ = await self._read(0, 0)
                    live = Position(epoch, last)
                    pos = await pin.start(live) if pin is not None else live
                    checked = True  # a lowered start is checked by the next read
                if not checked:
                    gap, _ = await self._gap(pos, pattern)
                    if gap is not None:
                        raise gap
                    checked = True
                if behind:  # replaying: read on without waiting until caught up
                    epoch, entries = await self._scan(pos, pattern)
                else:
                    epoch, entries = await self._next_entries(pos, pattern)
                behind = len(entries) >= self.batch
                backoff.reset()
                if entries:
                    for event in self._events(entries, epoch, pattern):
                        emit(event)
                    pos = Position(epoch, entry_offset(entries[-1][0])[0])
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
        backoff = reconnect_backoff()
        idle_ms = int(self.ack_wait * 1000)
        next_claim = 0.0
        loop = asyncio.get_running_loop()
        ready = False
        while not stop.is_set():
            raise_if_cancelled()
            try:
                if not ready:
                    await self._read(0, 0)  # the stream and its epoch exist
                    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                        await self.client.xgroup_create(self.log_key, group, id="0")
                    ready = True
                entries: list[Any] = []
                epoch = self._epoch
                if loop.time() >= next_claim:
                    epoch, entries = await self._group_read(group, name, idle_ms)
                    if not entries:
                        next_claim = loop.time() + self.ack_wait / 4
                if not entries:
                    epoch, entries = await self._group_read(group, name, None)
                backoff.reset()
                if not entries:
                    continue
                events = self._events((x for x in entries if x[1] is not None), epoch, pattern)
                if events:
                    await handle(events)
                await self.client.xack(self.log_key, group, *[x[0] for x in entries])
            except ResponseError as exc:
                if not _group_lost(exc):
                    raise
                ready = False  # the stream was deleted (and maybe recreated): set up again
            except _TRANSIENT as exc:
                log.warning("worker %s: %r; reconnecting", group, exc)
                ready = False
                await asyncio.sleep(backoff.next())

    async def _group_read(
        self, group: str, name: str, claim_idle_ms: int | None
    ) -> tuple[str, list[Any]]:
        """New entries for ``name`` (waiting up to a second), or with ``claim_idle_ms``
        entries others left pending that long; with the epoch, read in the same round trip."""
        async with self._reading, self.reader.pipeline(transaction=False) as pipe:
            if claim_idle_ms is None:
                pipe.xreadgroup(group, name, {self.log_key: ">"}, count=self.batch, block=1000)
            else:
                pipe.xautoclaim(self.log_key, group, name, claim_idle_ms, "0-0", count=self.batch)
            pipe.hget(self.meta_key, "epoch")
            reply, epoch = await pipe.execute()
        entries = (reply[0][1] if reply else []) if claim_idle_ms is None else reply[1]
        if epoch is None:  # the meta vanished: the read script makes a new epoch
            return (await self._read(0, 0))[0], entries
        return _text(epoch), entries

    async def drop(self) -> None:
        """Delete the stream and its metadata (tests and tear-down; never FLUSHALL)."""
        await self.client.delete(self.log_key, self.meta_key)

    async def close(self) -> None:
        """Complete every subscriber and close the connection pools."""
        await self._feeds.close()
        await self._commands.close()
        await self._reads.close()
        for client in (self._client, self._reader):
            if client is not None:
                with contextlib.suppress(Exception):  # a dead connection is closed enough
                    await client.aclose()
        self._client = self._reader = None

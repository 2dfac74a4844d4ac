"""NatsBroker: the Broker protocol on one NATS JetStream stream (nats-py).

A stream named ``S`` captures the subjects ``S.>``; the event ``chat.lobby.msg`` travels as
``S.chat.lobby.msg`` and patterns become the consumer's filter subject, so the server does
the filtering. Positions are ``<epoch>-<stream sequence>``.

Epoch: a hash of the stream's name and creation time, so deleting and recreating the stream
(or losing it with the server's storage) starts a new epoch. A purge keeps the stream and
its sequence numbers; it is detected from the stream's ``first_seq`` jumping past
``since``, which reports :class:`~streams.GapError` the same way retention does.

Retention maps to the stream limits (``max_msgs``, ``max_bytes``, ``max_age``,
``max_msgs_per_subject``, discarding old messages). A gap is reported when the stream's
first retained sequence is past ``since``, and when the per-subject limit deleted a
message from the middle of the log after ``since`` that may have matched the pattern: a
subject at the limit has lost messages, all older than its first retained one, so a
deleted sequence after ``since`` and before the newest such first sequence counts
(conservative: a deleted message's subject is unknown, so another subject's loss in that
range is reported too). Both checks run when a consumer is (re)created with a position,
never per message; the deleted sequences are fetched only when the stream has any.

The event id travels in ``Nats-Msg-Id`` so the server drops a retried publish (duplicate
window: 2 minutes). Subscriptions are ephemeral push consumers with flow control and
heartbeats (no acks), recreated from the last delivered sequence when the connection drops
or a delivery is skipped; their messages are handled in a subscription callback, which
keeps up with the publishers. Competing consumers are durable pull consumers named after
the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    Header,
    RetentionPolicy,
    StreamConfig,
    StreamInfo,
)

from streams import Event, GapError, Position, Retention, validate_pattern, validate_subject

from .backoff import Backoff
from .errors import PublishError
from .feed import Emit, TaskFeeds, raise_if_cancelled
from .follow import FollowingBroker
from .livestart import LiveStarts, Pin
from .positions import check_since, last_hole
from .url import BrokerSettings

__all__ = ["NatsBroker"]

log = logging.getLogger(__name__)
_TRANSIENT = (nats.errors.Error, asyncio.TimeoutError, OSError)
# Subjects at the per-subject limit looked up for their first message when resuming; past
# this many, every deleted sequence after ``since`` counts (a gap reported early, never late).
_MAX_SUBJECT_LOOKUPS = 256


class _Reset(Exception):
    """The push consumer lost its place (missed heartbeats, a skipped delivery)."""


async def _log_client_error(exc: Exception) -> None:
    log.info("nats client: %r", exc)


def epoch_of(info: StreamInfo) -> str:
    """The epoch of a stream: changes when the stream is recreated."""
    created = info.created.isoformat() if info.created else ""
    return hashlib.sha1(f"{info.config.name}|{created}".encode()).hexdigest()[:8]


class NatsBroker(FollowingBroker):
    """Events in a JetStream stream, shared by every process that names the same stream.

    >>> async def demo():  # doctest: +SKIP
    ...     broker = NatsBroker("nats://127.0.0.1:4222", stream="chat")
    ...     pos = await broker.apublish("chat.lobby.msg", {"text": "hi"})
    ...     await broker.close()
    ...     return pos.offset
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        stream: str = "rxstreams",
        retention: Retention | None = None,
        ack_wait: float = 30.0,
        heartbeat: float = 1.0,
        publish_attempts: int = 3,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.retention = retention or Retention()
        self.ack_wait = ack_wait
        self.heartbeat = heartbeat
        self.publish_attempts = publish_attempts
        self.timeout = timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._epoch = ""
        self._feeds = TaskFeeds()
        self._live = LiveStarts()

    @classmethod
    def from_settings(cls, settings: BrokerSettings) -> NatsBroker:
        return cls(settings.server, settings.stream, settings.retention, settings.ack_wait)

    # -- connection ---------------------------------------------------------------
    def _stream_config(self) -> StreamConfig:
        r = self.retention
        return StreamConfig(
            name=self.stream,
            subjects=[f"{self.stream}.>"],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_msgs=r.max_events or -1,
            max_bytes=r.max_bytes or -1,
            max_age=r.max_age or 0,
            max_msgs_per_subject=r.max_per_subject or -1,
            duplicate_window=120.0,
        )

    async def connect(self) -> NatsBroker:
        """Connect (reconnecting forever once connected) and create the stream if missing."""
        await self._info()
        return self

    async def _client(self) -> tuple[Client, JetStreamContext]:
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                # A first connection gives up after two attempts (a caller waiting on a
                # server that is not there gets an error, not a hang); once connected the
                # client reconnects forever (nats-py reads the option on every attempt).
                nc = await nats.connect(
                    self.url,
                    connect_timeout=2,
                    reconnect_time_wait=0.2,
                    max_reconnect_attempts=1,
                    allow_reconnect=True,
                    error_cb=_log_client_error,
                    name=f"rxstreams:{self.stream}",
                )
                nc.options["max_reconnect_attempts"] = -1
                self._nc = nc
                self._js = self._nc.jetstream(timeout=self.timeout)
            assert self._js is not None
            return self._nc, self._js

    async def _info(self) -> StreamInfo:
        _, js = await self._client()
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            info = await js.add_stream(self._stream_config())
        self._epoch = epoch_of(info)
        return info

    @property
    def epoch(self) -> str:
        """The epoch last seen from the server ("" before the first round trip)."""
        return self._epoch

    async def last_position(self) -> Position:
        """Where the stream ends now (its last sequence), asked of the server."""
        info = await self._info()
        return Position(epoch_of(info), info.state.last_seq)

    def _wire(self, subject: str) -> str:
        return f"{self.stream}.{subject}"

    # -- publishing ---------------------------------------------------------------
    async def apublish(self, subject: str, event: Event | Any) -> Position:
        """Store the event in the stream; returns its position once JetStream acknowledged.

        Retries with backoff (the server drops duplicates by event id), then raises
        :class:`~adapters.brokers.errors.PublishError`; so does any broker-side refusal.
        """
        return (await self.apublish_many(subject, [event]))[0]

    async def apublish_many(self, subject: str, events: Sequence[Event | Any]) -> list[Position]:
        """Store a batch, in order; returns the positions once JetStream acknowledged each.

        Best effort, not atomic: nats-py has no atomic batch, so events are published one
        after another (each retried, deduplicated by event id). When one fails the rest are
        not sent and :class:`~adapters.brokers.errors.PublishError` names the positions
        stored before it in ``committed``. An event that cannot be encoded raises
        :class:`~streams.EventError` before anything is sent. Positions increase; other
        publishers' events may land between them.
        """
        validate_subject(subject)
        batch = [e if isinstance(e, Event) else Event.create(e) for e in events]
        payloads = [e.encode() for e in batch]
        positions: list[Position] = []
        with self._live.publishing() as note:
            for event, payload in zip(batch, payloads, strict=True):
                try:
                    pos = await self._store(subject, event.id, payload)
                except PublishError as exc:
                    if len(batch) > 1:
                        exc = PublishError(
                            f"{exc} ({len(positions)} of {len(batch)} events stored before)",
                            committed=positions,
                        )
                    raise exc from exc.__cause__
                positions.append(pos)
                note((pos,))
        return positions

    async def _store(self, subject: str, msg_id: str, payload: bytes) -> Position:
        backoff = Backoff()
        for attempt in range(1, self.publish_attempts + 1):
            try:
                if not self._epoch:
                    await self._info()
                _, js = await self._client()
                ack = await js.publish(
                    self._wire(subject),
                    payload,
                    timeout=self.timeout,
                    stream=self.stream,
                    headers={"Nats-Msg-Id": msg_id},
                )
                return Position(self._epoch, ack.seq)
            except nats.js.errors.NoStreamResponseError:
                self._epoch = ""  # the stream is gone: recreate it (new epoch) and retry
                last: Exception = PublishError(f"stream {self.stream!r} is missing")
            except nats.js.errors.ServiceUnavailableError as exc:
                last = exc
            except (nats.js.errors.APIError, nats.errors.MaxPayloadError) as exc:
                # Refused (too large for the stream or the server, bad config): final.
                raise PublishError(f"publish to {subject!r} refused by NATS: {exc}") from exc
            except _TRANSIENT as exc:
                last = exc
            except Exception as exc:  # anything else from the client is a failed publish too
                raise PublishError(f"publish to {subject!r} failed: {exc!r}") from exc
            if attempt < self.publish_attempts:
                await asyncio.sleep(backoff.next())
        raise PublishError(f"publish to {subject!r} not acknowledged by NATS: {last}") from last

    # -- reading ------------------------------------------------------------------
    async def _earliest(self, pattern: str, info: StreamInfo) -> Position | None:
        epoch = epoch_of(info)
        state = info.state
        if state.messages:
            _, js = await self._client()
            with contextlib.suppress(nats.js.errors.NotFoundError):
                msg = await js.get_msg(
                    self.stream, seq=max(state.first_seq, 1), subject=self._wire(pattern), next=True
                )
                if msg.seq is not None:
                    return Position(epoch, msg.seq)
        return Position(epoch, state.last_seq + 1) if state.last_seq else None

    async def _check(self, since: Position, pattern: str) -> StreamInfo:
        info = await self._info()
        state = info.state
        lost_through = max(state.first_seq - 1, 0) if state.last_seq else 0
        gap = check_since(since, epoch_of(info), state.last_seq, lost_through, None)
        if gap is not None:
            raise GapError(since, await self._earliest(pattern, info), gap.reason)
        if state.num_deleted:
            hole = await self._last_hole(since.offset, pattern, info)
            if hole is not None:
                raise GapError(since, Position(epoch_of(info), hole + 1), "events were evicted")
        return info

    async def _last_hole(self, since: int, pattern: str, info: StreamInfo) -> int | None:
        """The newest sequence after ``since`` deleted from the middle of the log that may
        have held an event of ``pattern`` (see :func:`.positions.last_hole`), or ``None``.

        nats-py's ``stream_info`` cannot ask for ``deleted_details``, so this sends the
        JetStream API request itself, paging through the matching subjects' counts.
        """
        nc, js = await self._client()
        deleted: list[int] = []
        counts: dict[str, int] = {}
        while True:
            request = {
                "deleted_details": True,
                "subjects_filter": self._wire(pattern),
                "offset": len(counts),
            }
            msg = await nc.request(
                f"$JS.API.STREAM.INFO.{self.stream}",
                json.dumps(request).encode(),
                timeout=self.timeout,
            )
            reply = json.loads(msg.data)
            if "error" in reply:
                raise nats.js.errors.APIError.from_error(reply["error"])
            state = reply.get("state", {})
            deleted = state.get("deleted") or deleted
            seen = len(counts)
            counts.update(state.get("subjects") or {})
            if len(counts) == seen or len(counts) >= int(reply.get("total", 0)):
                break
        after = [d for d in deleted if d > since]
        if not after:
            return None
        limit = info.config.max_msgs_per_subject or -1
        full = [subject for subject, n in counts.items() if limit > 0 and n >= limit]
        if limit <= 0 or len(full) > _MAX_SUBJECT_LOOKUPS:
            return last_hole(since, after, None)  # holes not from the limit: any may matter
        newest = max(after)
        before = 0
        for subject in full:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                first = await js.get_msg(
                    self.stream, seq=max(info.state.first_seq, 1), subject=subject, next=True
                )
                before = max(before, first.seq or 0)
            if before > newest:
                break  # every hole after since lies before it: no need to look further
        return last_hole(since, after, before)

    async def _follow(
        self, pattern: str, since: Position | None, emit: Emit, pin: Pin | None = None
    ) -> None:
        backoff = Backoff()
        cursor: list[Position] = []
        if since is not None:
            cursor.append(since)
        while True:
            raise_if_cancelled()
            try:
                if not cursor:
                    info = await self._info()
                    live = Position(epoch_of(info), info.state.last_seq)
                    cursor.append(await pin.start(live) if pin is not None else live)
                else:
                    await self._check(cursor[0], pattern)
                await self._push(pattern, cursor, emit, backoff)
            except (_Reset, *_TRANSIENT) as exc:
                log.info("subscription %s: %r; resuming", pattern, exc)
                await asyncio.sleep(backoff.next())

    async def _push(
        self, pattern: str, cursor: list[Position], emit: Emit, backoff: Backoff
    ) -> None:
        """Run one ephemeral push consumer from ``cursor[0]``, advancing it per event; raises
        :class:`_Reset` (or a connection error) when the consumer must be recreated.

        Messages are handled in a subscription callback, which nats-py calls in a loop that
        drains its pending queue without yielding; ``sub.next_msg`` instead costs two tasks
        and a loop turn per message, so under load delivery fell far behind publishing.
        This task only watches: for the callback's failure and for missed heartbeats.
        """
        nc, js = await self._client()
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[None] = loop.create_future()
        strip = len(self.stream) + 1
        epoch = cursor[0].epoch
        last = cursor[0].offset
        delivered = 0
        seen = loop.time()

        def fail(exc: BaseException) -> None:
            if not failed.done():
                failed.set_exception(exc)

        async def on_message(msg: Msg) -> None:
            nonlocal last, delivered, seen
            if failed.done():
                return
            seen = loop.time()
            try:
                if JetStreamContext.is_status_msg(msg):
                    headers = msg.headers or {}
                    stalled = headers.get(Header.CONSUMER_STALLED)
                    if msg.reply:
                        await nc.publish(msg.reply, b"")  # flow control answer
                    elif stalled:
                        await nc.publish(stalled, b"")
                    # An idle heartbeat names the last delivery: if it never reached us
                    # (lost in a dropped connection, with nothing after it), start over.
                    sent = headers.get(Header.LAST_CONSUMER)
                    if sent is not None and int(sent) > delivered:
                        raise _Reset("a heartbeat shows a delivery that never arrived")
                    backoff.reset()
                    return
                meta = msg.metadata
                if meta.sequence.consumer != delivered + 1:
                    raise _Reset("a delivery was skipped")
                delivered = meta.sequence.consumer
                seq = meta.sequence.stream
                if seq <= last:
                    return
                event = Event.decode(msg.data).stamped(msg.subject[strip:], f"{epoch}-{seq}")
                last = seq
                cursor[0] = Position(epoch, seq)
                emit(event)
            except Exception as exc:  # a reset, a connection error or the observer's own
                fail(exc)

        inbox = nc.new_inbox()
        sub = await nc.subscribe(
            inbox, cb=on_message, pending_msgs_limit=65536, pending_bytes_limit=64 << 20
        )
        consumer = ""
        try:
            info = await js.add_consumer(
                self.stream,
                ConsumerConfig(
                    deliver_subject=inbox,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=last + 1,
                    ack_policy=AckPolicy.NONE,
                    filter_subject=self._wire(pattern),
                    flow_control=True,
                    idle_heartbeat=self.heartbeat,
                    mem_storage=True,
                    inactive_threshold=max(5.0, self.heartbeat * 5),
                ),
            )
            consumer = info.name or ""
            seen = loop.time()
            silence = self.heartbeat * 3
            while not failed.done():
                await asyncio.wait([failed], timeout=seen + silence - loop.time())
                if not failed.done() and loop.time() - seen >= silence:
                    raise _Reset("missed heartbeats")
            failed.result()
        finally:
            if not failed.done():
                failed.cancel()  # the callback emits nothing more from here on
            elif not failed.cancelled():
                failed.exception()  # retrieved: a cancelled watcher leaves no warning
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if consumer:
                with contextlib.suppress(Exception):
                    await js.delete_consumer(self.stream, consumer)

    # -- competing consumers ------------------------------------------------------
    async def consume(
        self,
        group: str,
        pattern: str,
        handle: Callable[[list[Event]], Awaitable[None]],
        consumer: str | None = None,
        stop: asyncio.Event | None = None,
        batch: int = 256,
    ) -> None:
        """Process events of ``pattern`` as one member of the durable pull consumer ``group``.

        Each batch is acknowledged only after ``handle`` returned; JetStream hands a batch
        left unacknowledged for ``ack_wait`` seconds to another member. A new group starts
        at the oldest retained event. Runs until ``stop`` is set; an exception from
        ``handle`` ends it, leaving the batch for other members.
        """
        validate_pattern(pattern)
        stop = stop or asyncio.Event()
        backoff = Backoff()
        strip = len(self.stream) + 1
        psub: Any = None
        while not stop.is_set():
            raise_if_cancelled()
            try:
                if psub is None:
                    info = await self._info()
                    epoch = epoch_of(info)
                    _, js = await self._client()
                    try:
                        await js.consumer_info(self.stream, group)
                    except nats.js.errors.NotFoundError:
                        await js.add_consumer(
                            self.stream,
                            ConsumerConfig(
                                durable_name=group,
                                deliver_policy=DeliverPolicy.ALL,
                                ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=self.ack_wait,
                                filter_subject=self._wire(pattern),
                                max_ack_pending=20_000,
                            ),
                        )
                    psub = await js.pull_subscribe_bind(group, self.stream)
                try:
                    msgs = await psub.fetch(batch, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                backoff.reset()
                events = [
                    Event.decode(m.data).stamped(
                        m.subject[strip:], f"{epoch}-{m.metadata.sequence.stream}"
                    )
                    for m in msgs
                ]
                await handle(events)
                for m in msgs:
                    await m.ack()
                nc, _ = await self._client()
                await nc.flush(timeout=int(self.timeout) or 1)
            except _TRANSIENT as exc:
                log.warning("worker %s: %r; reconnecting", group, exc)
                psub = None
                await asyncio.sleep(backoff.next())

    async def drop(self) -> None:
        """Delete the stream (tests and tear-down)."""
        _, js = await self._client()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(self.stream)

    async def close(self) -> None:
        """Complete every subscriber and close the connection."""
        await self._feeds.close()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # a dead connection is closed enough
                await self._nc.close()
        self._nc = None
        self._js = None

"""NatsBroker: the Broker protocol on one NATS JetStream stream (nats-py).

A stream named ``S`` captures the subjects ``S.>``; the event ``chat.lobby.msg`` travels as
``S.chat.lobby.msg`` and patterns become the consumer's filter subject, so the server does
the filtering. Positions are ``<epoch>-<stream sequence>``. :meth:`NatsBroker.connect`
creates the stream (or checks it exists), so other producers can publish into it at once.

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
range is reported too). Both checks run when a consumer is (re)created with a position.
While a subscription reads, a delivery that skips stream sequences is judged from its
reply subject alone (:func:`.nats_wire.judge`): for ``>`` any skipped sequence is a lost
event; for a narrower pattern the deleted sequences are looked up only when the stream has
a per-subject limit and the consumer lags by at least that limit (a consumer that keeps up
never asks); a loss fails the subscription with :class:`~streams.GapError` before any later
event is emitted.

Other producers: a message that is not a CloudEvent becomes an event
(:func:`.foreign.read_entry`: plain JSON is its ``data``, the id is ``Nats-Msg-Id``); one
that cannot be read at all is skipped, logged and counted in :attr:`NatsBroker.skipped`.

The event id travels in ``Nats-Msg-Id`` so the server drops a retried publish (duplicate
window: 2 minutes). ``apublish_many`` is atomic (all or nothing) on NATS server 2.12+,
whose streams this broker creates with ``allow_atomic`` (and enables it on an existing
stream); on older servers it is best effort: pipelined, each message expecting the one
before it (``Nats-Expected-Last-Msg-Id``), so what is stored is always a prefix, in order.
:attr:`NatsBroker.atomic_batch` (and :meth:`NatsBroker.health`) says which is in force.

Subscriptions are ephemeral push consumers with flow control and heartbeats (no acks),
recreated from the last delivered sequence when the connection drops or a delivery is
skipped; their messages are handled in a subscription callback, which keeps up with the
publishers. Competing consumers are durable pull consumers named after the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import orjson
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

from .backoff import Backoff, reconnect_backoff
from .errors import PublishError
from .feed import Emit, TaskFeeds, raise_if_cancelled
from .follow import FollowingBroker
from .foreign import SkippedEntries, UnreadableEntry, own_event, read_entry
from .livestart import LiveStarts, Pin
from .nats_wire import (
    ATOMIC_BATCH_MAX,
    Delivery,
    Holes,
    Step,
    atomic_capable,
    batch_chunks,
    batch_headers,
    batch_positions,
    hole_between,
    holes_from,
    judge,
    parse_ack_reply,
)
from .positions import check_since
from .url import BrokerSettings

__all__ = ["NatsBroker"]

log = logging.getLogger(__name__)
_TRANSIENT = (nats.errors.Error, asyncio.TimeoutError, OSError)
# Subjects at the per-subject limit looked up for their first message when resuming; past
# this many, every deleted sequence after ``since`` counts (a gap reported early, never late).
_MAX_SUBJECT_LOOKUPS = 256
# JetStream API error codes (nats-server's errors.json).
_WRONG_LAST_MSG_ID = 10070
_ATOMIC_DISABLED = 10174
_ATOMIC_TOO_LARGE = 10199
_ATOMIC_DUPLICATE = 10201
_MSG_ID = "Nats-Msg-Id"
_EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"

T = TypeVar("T")


class _Reset(Exception):
    """The push consumer lost its place (missed heartbeats, a skipped delivery)."""


class _NotAtomic(Exception):
    """The server will not take this batch atomically (disabled, duplicate ids, too large)."""

    def __init__(self, reason: str, limit: int | None = None) -> None:
        super().__init__(reason)
        self.limit = limit


async def _log_client_error(exc: Exception) -> None:
    log.info("nats client: %r", exc)


def epoch_of(info: StreamInfo) -> str:
    """The epoch of a stream: changes when the stream is recreated."""
    created = info.created.isoformat() if info.created else ""
    return hashlib.sha1(f"{info.config.name}|{created}".encode()).hexdigest()[:8]


def _raise_for(reply: dict[str, Any]) -> None:
    """Raise the JetStream API error a reply carries, if any."""
    if "error" in reply:
        nats.js.errors.APIError.from_error(reply["error"])


class NatsBroker(FollowingBroker):
    """Events in a JetStream stream, shared by every process that names the same stream.

    >>> async def demo():  # doctest: +SKIP
    ...     broker = await NatsBroker("nats://127.0.0.1:4222", stream="chat").connect()
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
        self.skipped = SkippedEntries(f"nats://{stream}")
        """Unreadable messages (another producer's) that readers skipped: ``.count``."""
        self.atomic_batch = False
        """Whether ``apublish_many`` is atomic: the server is 2.12+ and the stream
        accepts atomic batches (known after the first round trip, e.g. :meth:`connect`)."""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._epoch = ""
        self._per_subject = 0  # the stream's max_msgs_per_subject (0: none)
        self._every_subject = ""  # the pattern that takes every subject of the stream
        self._atomic_asked = False  # enabling allow_atomic on an existing stream: tried
        self._batch_limit = ATOMIC_BATCH_MAX
        self._feeds = TaskFeeds()
        self._live = LiveStarts()

    @classmethod
    def from_settings(cls, settings: BrokerSettings) -> NatsBroker:
        return cls(settings.server, settings.stream, settings.retention, settings.ack_wait)

    # -- connection ---------------------------------------------------------------
    def _stream_config(self, atomic: bool = False) -> StreamConfig:
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
            allow_atomic=True if atomic else None,
        )

    async def connect(self) -> NatsBroker:
        """Connect (reconnecting forever once connected) and create the stream if missing,
        so that other producers can publish into it as soon as this returns."""
        await self._info()
        return self

    async def _client(self) -> tuple[Client, JetStreamContext]:
        nc, js = self._nc, self._js
        if nc is not None and js is not None and not nc.is_closed:
            return nc, js
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

    @staticmethod
    def _server_atomic(nc: Client) -> bool:
        version = nc.connected_server_version
        return atomic_capable(version.major, version.minor)

    async def _info(self) -> StreamInfo:
        nc, js = await self._client()
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            info = await js.add_stream(self._stream_config(self._server_atomic(nc)))
        if not info.config.allow_atomic and not self._atomic_asked and self._server_atomic(nc):
            self._atomic_asked = True
            info = await self._allow_atomic(nc) or info
        self._note(info, nc)
        return info

    def _note(self, info: StreamInfo, nc: Client) -> None:
        config = info.config
        self._epoch = epoch_of(info)
        self.atomic_batch = bool(config.allow_atomic) and self._server_atomic(nc)
        self._per_subject = max(config.max_msgs_per_subject or 0, 0)
        self._every_subject = ">" if config.subjects == [f"{self.stream}.>"] else ""

    async def _allow_atomic(self, nc: Client) -> StreamInfo | None:
        """Turn on ``allow_atomic`` in an existing stream (created by an older server or
        another client), changing nothing else: the server's own JSON config is sent back
        (nats-py's ``StreamConfig`` would drop fields it does not know)."""
        try:
            raw = await self._api(nc, f"STREAM.INFO.{self.stream}", {})
            config = {**raw["config"], "allow_atomic": True}
            reply = await self._api(nc, f"STREAM.UPDATE.{self.stream}", config)
        except (*_TRANSIENT, KeyError) as exc:
            log.warning("stream %s: cannot enable atomic batch publish: %r", self.stream, exc)
            return None
        info: StreamInfo = StreamInfo.from_response(reply)
        return info

    async def _api(self, nc: Client, what: str, request: dict[str, Any]) -> dict[str, Any]:
        """One JetStream API request nats-py has no method for; raises its error."""
        msg = await nc.request(
            f"$JS.API.{what}", json.dumps(request).encode(), timeout=self.timeout
        )
        reply: dict[str, Any] = orjson.loads(msg.data)
        _raise_for(reply)
        return reply

    @property
    def epoch(self) -> str:
        """The epoch last seen from the server ("" before the first round trip)."""
        return self._epoch

    async def last_position(self) -> Position:
        """Where the stream ends now (its last sequence), asked of the server."""
        info = await self._info()
        return Position(epoch_of(info), info.state.last_seq)

    async def health(self) -> dict[str, Any]:
        """The broker's state for ``/healthz``; never raises, answers within ``timeout``.

        ``{"connected", "stream", "epoch", "atomic_batch", "messages"}`` (``connected``
        means the stream answered; when it did not, an ``"error"`` says why).
        """
        state: dict[str, Any] = {
            "connected": False,
            "stream": self.stream,
            "epoch": self._epoch,
            "atomic_batch": self.atomic_batch,
            "messages": 0,
        }
        try:
            info = await asyncio.wait_for(self._info(), self.timeout)
        except Exception as exc:  # unreachable, timed out, refused: all reported, never raised
            state["error"] = str(exc) or type(exc).__name__
            return state
        state.update(
            connected=True,
            epoch=epoch_of(info),
            atomic_batch=self.atomic_batch,
            messages=info.state.messages,
        )
        return state

    def _wire(self, subject: str) -> str:
        return f"{self.stream}.{subject}"

    # -- publishing ---------------------------------------------------------------
    async def apublish(self, subject: str, event: Event | Any) -> Position:
        """Store the event in the stream; returns its position once JetStream acknowledged.

        Retries with backoff (the server drops duplicates by event id), then raises
        :class:`~adapters.brokers.errors.PublishError`; so does any broker-side refusal.
        """
        validate_subject(subject)
        e = event if isinstance(event, Event) else Event.create(event)
        payload = e.encode()
        if not len(self._live):  # no live subscription is starting: nothing to tell
            return await self._store(subject, e.id, payload)
        with self._live.publishing() as note:
            pos = await self._store(subject, e.id, payload)
            note((pos,))
        return pos

    async def apublish_many(self, subject: str, events: Sequence[Event | Any]) -> list[Position]:
        """Store a batch, in order; returns the positions once JetStream acknowledged it.

        Atomic where :attr:`atomic_batch` holds (NATS server 2.12+): the batch is stored
        whole and contiguous, or not at all (``committed`` is then empty); a batch larger
        than the server's limit (1,000 messages by default) is split into atomic parts
        stored in order, and ``committed`` names the parts stored before a failure.
        Otherwise best effort: the events are pipelined, each expecting the one before it
        as the stream's last message, so another publisher's message arriving in between
        only restarts the chain there; when one fails the rest are not stored and
        :class:`~adapters.brokers.errors.PublishError` names the positions stored before it
        in ``committed``. Either way retries are deduplicated by event id, an event that
        cannot be encoded raises :class:`~streams.EventError` before anything is sent, and
        positions increase.
        """
        validate_subject(subject)
        batch = [e if isinstance(e, Event) else Event.create(e) for e in events]
        payloads = [e.encode() for e in batch]
        ids = [e.id for e in batch]
        positions: list[Position] = []
        with self._live.publishing() as note:
            try:
                if len(batch) == 1:
                    positions.append(await self._store(subject, ids[0], payloads[0]))
                elif batch:
                    await self._ready(subject)
                    store = self._store_atomic if self.atomic_batch else self._store_chained
                    await store(subject, ids, payloads, positions)
            except PublishError as exc:
                if len(batch) > 1:
                    exc = PublishError(
                        f"{exc} ({len(positions)} of {len(batch)} events stored before)",
                        committed=positions,
                    )
                raise exc from exc.__cause__
            finally:
                note(positions)
        return positions

    async def _ready(self, subject: str) -> None:
        """Know the stream (and so whether batches are atomic) before a batch."""
        if not self._epoch:
            await self._retrying(subject, self._client)

    async def _retrying(
        self,
        subject: str,
        attempt: Callable[[], Awaitable[T]],
        failure: Exception | None = None,
    ) -> T:
        """``attempt()`` (after learning the stream if needed), retried with backoff while
        the failure is transient; every failure ends as a :class:`PublishError`.
        ``failure``: how a first attempt already made (on the fast path) failed."""
        backoff: Backoff | None = None  # made on the first failure only (seeds from urandom)
        last: Exception | None = None
        for n in range(1, self.publish_attempts + 1):
            if failure is None:
                try:
                    if not self._epoch:
                        await self._info()
                    return await attempt()
                except Exception as exc:
                    failure = exc
            last = self._transient(subject, failure)
            failure = None
            if n < self.publish_attempts:
                backoff = backoff or reconnect_backoff()
                await asyncio.sleep(backoff.next())
        raise PublishError(f"publish to {subject!r} not acknowledged by NATS: {last}") from last

    def _transient(self, subject: str, exc: Exception) -> Exception:
        """``exc`` if a retry may succeed; raises the final :class:`PublishError` if not."""
        if isinstance(exc, nats.js.errors.NoStreamResponseError):
            self._epoch = ""  # the stream is gone: recreate it (new epoch) and retry
            return PublishError(f"stream {self.stream!r} is missing")
        if isinstance(exc, nats.js.errors.ServiceUnavailableError):
            return exc
        if isinstance(exc, nats.js.errors.APIError | nats.errors.MaxPayloadError):
            # Refused (too large for the stream or the server, bad config): final.
            raise PublishError(f"publish to {subject!r} refused by NATS: {exc}") from exc
        if isinstance(exc, _TRANSIENT):
            return exc
        if isinstance(exc, PublishError | _NotAtomic):
            raise exc
        # anything else from the client is a failed publish too
        raise PublishError(f"publish to {subject!r} failed: {exc!r}") from exc

    async def _publish(self, nc: Client, wire: str, payload: bytes, msg_id: str) -> int:
        """One JetStream publish; its stream sequence. What ``js.publish`` does, minus
        the expected-stream header (the subject can only be this stream's) and with the
        acknowledgement read by orjson; raises the same errors."""
        try:
            msg = await nc.request(wire, payload, timeout=self.timeout, headers={_MSG_ID: msg_id})
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        reply = orjson.loads(msg.data)
        _raise_for(reply)
        return int(reply["seq"])

    async def _store(self, subject: str, msg_id: str, payload: bytes) -> Position:
        wire = self._wire(subject)
        nc = self._nc
        failure: Exception | None = None
        if self._epoch and nc is not None and nc.is_connected:  # the hot path: one attempt
            try:
                return Position(self._epoch, await self._publish(nc, wire, payload, msg_id))
            except Exception as exc:
                failure = exc

        async def attempt() -> Position:
            nc, _ = await self._client()
            return Position(self._epoch, await self._publish(nc, wire, payload, msg_id))

        return await self._retrying(subject, attempt, failure)

    async def _store_chained(
        self, subject: str, ids: list[str], payloads: list[bytes], positions: list[Position]
    ) -> None:
        """Best effort, pipelined: appends each stored event's position to ``positions``.

        Every message but the first of a chain carries ``Nats-Expected-Last-Msg-Id`` (the
        id before it), so the server stores a message only right after its predecessor:
        what is stored is a prefix, in order, even with all of them in flight. Where the
        chain breaks (another publisher's message came first) a new chain starts; any
        other failure falls back to one retried publish at a time from there.
        """
        start = len(positions)
        restarts = 0
        while start < len(ids) and restarts <= self.publish_attempts:
            stored, failure = await self._send_chain(subject, ids, payloads, start)
            positions.extend(Position(self._epoch, seq) for seq in stored)
            start += len(stored)
            if failure is None:
                return
            wrong_last = isinstance(failure, nats.js.errors.APIError) and (
                failure.err_code == _WRONG_LAST_MSG_ID
            )
            if not wrong_last:
                break
            restarts += 1
        for i in range(len(positions), len(ids)):
            positions.append(await self._store(subject, ids[i], payloads[i]))

    async def _send_chain(
        self, subject: str, ids: list[str], payloads: list[bytes], start: int
    ) -> tuple[list[int], BaseException | None]:
        """Publish ``start:`` as one chain, then wait for the acknowledgements: the stream
        sequences of the acknowledged prefix, and what stopped it (``None``: all stored)."""
        pending: list[asyncio.Future[Any]] = []
        try:
            _, js = await self._client()
            wire = self._wire(subject)
            for i in range(start, len(ids)):
                headers = {_MSG_ID: ids[i]}
                if i > start:
                    headers[_EXPECTED_LAST_MSG_ID] = ids[i - 1]
                pending.append(await js.publish_async(wire, payloads[i], headers=headers))
        except Exception as exc:  # not all sent: settle what was, then go one by one
            await self._abandon(pending)
            return [], exc
        _, late = await asyncio.wait(pending, timeout=self.timeout)
        for future in late:
            future.cancel()
        return _acknowledged(pending)

    async def _abandon(self, pending: list[asyncio.Future[Any]]) -> None:
        """Settle the publishes of a chain that could not be sent whole: wait for their
        acknowledgements (up to ``timeout``), cancel the rest, retrieve every outcome."""
        if pending:
            await asyncio.wait(pending, timeout=self.timeout)
        for future in pending:
            if future.done() and not future.cancelled():
                future.exception()
            else:
                future.cancel()

    async def _store_atomic(
        self, subject: str, ids: list[str], payloads: list[bytes], positions: list[Position]
    ) -> None:
        """Atomic batches (ADR-50), in parts of at most the server's limit; appends the
        positions of each part once committed."""
        while len(positions) < len(ids):
            done = len(positions)
            for part in batch_chunks(len(ids) - done, self._batch_limit):
                lo, hi = done + part.start, done + part.stop
                try:
                    send = functools.partial(self._send_batch, subject, ids[lo:hi], payloads[lo:hi])
                    seqs = await self._retrying(subject, send)
                except _NotAtomic as exc:
                    if exc.limit is not None and exc.limit < self._batch_limit:
                        self._batch_limit = max(exc.limit, 1)
                        break  # split again, smaller
                    # Duplicates (a retried batch that was committed) or atomic turned off:
                    # one at a time returns the positions stored before and stores the rest.
                    for i in range(lo, hi):
                        positions.append(await self._store(subject, ids[i], payloads[i]))
                    continue
                positions.extend(Position(self._epoch, seq) for seq in seqs)

    async def _send_batch(self, subject: str, ids: list[str], payloads: list[bytes]) -> range:
        """Send one atomic batch and commit it; the stream sequences it got."""
        nc, _ = await self._client()
        limit = nc.max_payload
        for payload in payloads:  # refuse before staging anything
            if len(payload) > limit:
                raise nats.errors.MaxPayloadError(f"{len(payload)} bytes > max_payload {limit}")
        wire = self._wire(subject)
        batch_id = uuid.uuid4().hex
        last = len(payloads)
        for n, (msg_id, payload) in enumerate(zip(ids[:-1], payloads[:-1], strict=True), 1):
            await nc.publish(wire, payload, headers=batch_headers(batch_id, n, False, msg_id))
        try:
            msg = await nc.request(
                wire,
                payloads[-1],
                timeout=self.timeout,
                headers=batch_headers(batch_id, last, True, ids[-1]),
            )
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        reply = orjson.loads(msg.data)
        try:
            _raise_for(reply)
        except nats.js.errors.APIError as exc:
            if exc.err_code == _ATOMIC_TOO_LARGE:
                size = re.search(r"(\d+)\s*$", exc.description or "")
                raise _NotAtomic(
                    "batch too large", int(size.group(1)) if size else last // 2
                ) from exc
            if exc.err_code == _ATOMIC_DUPLICATE:
                raise _NotAtomic("batch holds an event stored before") from exc
            if exc.err_code == _ATOMIC_DISABLED:
                self.atomic_batch = False
                raise _NotAtomic("atomic publish disabled on the stream") from exc
            raise
        return batch_positions(int(reply["seq"]), int(reply.get("count") or last))

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
            holes = await self._holes(pattern)
            hole = hole_between(since.offset, state.last_seq + 1, holes)
            if hole is not None:
                raise GapError(since, Position(epoch_of(info), hole + 1), "events were evicted")
        return info

    async def _holes(self, pattern: str, covers: int = 0) -> Holes:
        """What the stream lost from the middle of its log that may have held an event of
        ``pattern`` (see :class:`.nats_wire.Holes` and :func:`.positions.last_hole`).

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
            reply = await self._api(nc, f"STREAM.INFO.{self.stream}", request)
            state = reply.get("state", {})
            deleted = state.get("deleted") or deleted
            seen = len(counts)
            counts.update(state.get("subjects") or {})
            if len(counts) == seen or len(counts) >= int(reply.get("total", 0)):
                break
        first_seq = int(state.get("first_seq") or 0)
        limit = int(reply.get("config", {}).get("max_msgs_per_subject") or -1)
        full = [subject for subject, n in counts.items() if limit > 0 and n >= limit]
        if not deleted or limit <= 0 or len(full) > _MAX_SUBJECT_LOOKUPS:
            return holes_from(deleted, None, first_seq, covers)  # any hole may matter
        newest = max(deleted)
        before = 0
        for subject in full:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                first = await js.get_msg(
                    self.stream, seq=max(first_seq, 1), subject=subject, next=True
                )
                before = max(before, first.seq or 0)
            if before > newest:
                break  # every hole lies before it: no need to look further
        return holes_from(deleted, before, first_seq, covers)

    def _read(self, msg: Msg, d: Delivery, epoch: str, strip: int) -> Event | None:
        """The event a delivered message stands for, or ``None`` (unreadable: counted).

        What rxstreams stored is read by :func:`.foreign.own_event` once its subject was
        seen valid; anything else (and any doubt) by :func:`.foreign.read_entry`."""
        subject = msg.subject[strip:]
        event = own_event(msg.data, subject, (epoch, d.stream_seq))
        if event is not None:
            return event
        headers = msg.headers
        msg_id = headers.get(_MSG_ID) if headers else None
        try:
            event = read_entry(
                msg.data,
                subject,
                Position(epoch, d.stream_seq),
                source=f"nats://{self.stream}",
                msg_id=msg_id,
                timestamp=d.timestamp,
            )
        except UnreadableEntry as exc:
            self.skipped.note(exc)
            return None
        return event

    async def _follow(
        self, pattern: str, since: Position | None, emit: Emit, pin: Pin | None = None
    ) -> None:
        backoff = reconnect_backoff()
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
        """Run one ephemeral push consumer from ``cursor[0]``, advancing it (when it ends)
        past every delivery, also an unreadable one; raises :class:`_Reset` (or a
        connection error) when the consumer must be recreated, :class:`~streams.GapError`
        when events were lost.

        Messages are handled in a subscription callback, which nats-py calls in a loop that
        drains its pending queue without yielding; ``sub.next_msg`` instead costs two tasks
        and a loop turn per message, so under load delivery fell far behind publishing.
        This task only watches: for the callback's failure and for missed heartbeats.
        """
        nc, js = await self._client()
        run = _PushRun(self, nc, pattern, cursor[0], emit, backoff)
        inbox = nc.new_inbox()
        run.sub = await nc.subscribe(
            inbox, cb=run.on_message, pending_msgs_limit=65536, pending_bytes_limit=64 << 20
        )
        consumer = ""
        try:
            info = await js.add_consumer(self.stream, self._push_config(inbox, pattern, run.last))
            consumer = info.name or ""
            await run.watch(silence=self.heartbeat * 3)
        finally:
            if run.last > cursor[0].offset:
                cursor[0] = Position(run.epoch, run.last)
            run.stop()
            with contextlib.suppress(Exception):
                await run.sub.unsubscribe()
            if consumer:
                with contextlib.suppress(Exception):
                    await js.delete_consumer(self.stream, consumer)

    def _push_config(self, inbox: str, pattern: str, after: int) -> ConsumerConfig:
        """An ephemeral, ordered, unacknowledged push consumer of ``pattern`` delivering to
        ``inbox`` from stream sequence ``after + 1``, with flow control and heartbeats."""
        return ConsumerConfig(
            deliver_subject=inbox,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=AckPolicy.NONE,
            filter_subject=self._wire(pattern),
            flow_control=True,
            idle_heartbeat=self.heartbeat,
            mem_storage=True,
            inactive_threshold=max(5.0, self.heartbeat * 5),
        )

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
        ``handle`` ends it, leaving the batch for other members. Unreadable messages
        (another producer's) are acknowledged without being handled, and counted in
        :attr:`skipped`.
        """
        validate_pattern(pattern)
        stop = stop or asyncio.Event()
        backoff = reconnect_backoff()
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
                events = self._read_all(msgs, epoch, strip)
                if events:
                    await handle(events)
                for m in msgs:
                    await m.ack()
                nc, _ = await self._client()
                await nc.flush(timeout=int(self.timeout) or 1)
            except _TRANSIENT as exc:
                log.warning("worker %s: %r; reconnecting", group, exc)
                psub = None
                await asyncio.sleep(backoff.next())

    def _read_all(self, msgs: list[Msg], epoch: str, strip: int) -> list[Event]:
        events = []
        for m in msgs:
            d = parse_ack_reply(m.reply) if m.reply else None
            event = self._read(m, d, epoch, strip) if d is not None else None
            if event is not None:
                events.append(event)
        return events

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


def _acknowledged(
    pending: list[asyncio.Future[Any]],
) -> tuple[list[int], BaseException | None]:
    """The stream sequences of the acknowledged prefix of a chain's settled publishes, and
    what stopped it (``None``: all stored; a cancelled one counts as a timeout)."""
    stored: list[int] = []
    for future in pending:
        if future.cancelled():
            return stored, TimeoutError()
        failure = future.exception()
        if failure is not None:
            for rest in pending:  # retrieve every outcome: no "never retrieved" warnings
                if rest.done() and not rest.cancelled():
                    rest.exception()
            return stored, failure
        stored.append(future.result().seq)
    return stored, None


class _PushRun:
    """One ephemeral push consumer's delivery state (see :meth:`NatsBroker._push`).

    nats-py calls :meth:`on_message` for each message, in a loop that drains its pending
    queue without yielding: it decides per delivery (deliver, skip a stale one, verify a
    jump, fail with a reset or a gap) and emits. The task running the consumer only waits
    in :meth:`watch`: for the callback's failure and for missed heartbeats. ``last`` is the
    stream sequence of the last delivery, readable also once the consumer ended.
    """

    __slots__ = (
        "backoff",
        "broker",
        "delivered",
        "emit",
        "epoch",
        "every_subject",
        "failed",
        "holes",
        "last",
        "loop",
        "nc",
        "pattern",
        "per_subject",
        "seen",
        "strip",
        "sub",
    )

    def __init__(
        self,
        broker: NatsBroker,
        nc: Client,
        pattern: str,
        start: Position,
        emit: Emit,
        backoff: Backoff,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.failed: asyncio.Future[None] = self.loop.create_future()
        self.broker = broker
        self.nc = nc
        self.pattern = pattern
        self.epoch = start.epoch
        self.last = start.offset
        self.delivered = 0
        self.seen = self.loop.time()
        self.strip = len(broker.stream) + 1
        self.every_subject = pattern == broker._every_subject
        self.per_subject = broker._per_subject
        self.holes: Holes | None = None
        self.emit = emit
        self.backoff = backoff
        self.sub: Any = None

    async def on_message(self, msg: Msg) -> None:
        """The subscription callback: one delivery, or a status message (heartbeat, flow
        control). A reset, a gap, a connection error or the observer's error ends the run."""
        if self.failed.done():
            return
        self.seen = self.loop.time()
        try:
            d = parse_ack_reply(msg.reply) if msg.reply else None
            if d is None:
                await self._on_status(msg)
                return
            if d.consumer_seq == self.delivered + 1 and d.stream_seq == self.last + 1:
                self.delivered = d.consumer_seq  # the common case, as judge() would say
            elif not await self._out_of_line(d):
                return
            self.last = d.stream_seq  # the cursor follows when this consumer ends
            event = self.broker._read(msg, d, self.epoch, self.strip)
            if event is not None:
                self.emit(event)
        except Exception as exc:
            self.fail(exc)

    async def _out_of_line(self, d: Delivery) -> bool:
        """A delivery that does not follow the last one: ``True`` to deliver it, ``False``
        to drop a stale one; raises :class:`_Reset` or :class:`~streams.GapError`."""
        step = judge(
            self.last, self.delivered, d, every_subject=self.every_subject,
            per_subject=self.per_subject,
        )  # fmt: skip
        if step is Step.RESET:
            raise _Reset("a delivery was skipped")
        self.delivered = d.consumer_seq
        if step is Step.STALE:
            return False
        if step is Step.HOLE:
            raise self._gap(d.stream_seq - 1)
        if step is Step.VERIFY:
            await self._verify(d)
        return True

    async def _verify(self, d: Delivery) -> None:
        """Raise a :class:`~streams.GapError` if events between the last delivery and ``d``
        were lost (rather than filtered out or deleted on purpose)."""
        if self.holes is None or d.consumer_seq > self.holes.covers:
            pending = self.sub.pending_msgs
            self.holes = await self.broker._holes(self.pattern, d.consumer_seq + pending)
        hole = hole_between(self.last, d.stream_seq, self.holes)
        if hole is not None:
            raise self._gap(hole)

    async def _on_status(self, msg: Msg) -> None:
        """Answer flow control and stalls; a heartbeat naming a delivery that never arrived
        (lost in a dropped connection, with nothing after it) means start over."""
        headers = msg.headers
        if not headers or not headers.get(Header.STATUS):
            return  # not JetStream's: ignore
        stalled = headers.get(Header.CONSUMER_STALLED)
        if msg.reply:
            await self.nc.publish(msg.reply, b"")  # flow control answer
        elif stalled:
            await self.nc.publish(stalled, b"")
        sent = headers.get(Header.LAST_CONSUMER)
        if sent is not None and int(sent) > self.delivered:
            raise _Reset("a heartbeat shows a delivery that never arrived")
        self.backoff.reset()

    def _gap(self, hole: int) -> GapError:
        return GapError(
            Position(self.epoch, self.last), Position(self.epoch, hole + 1), "events were evicted"
        )

    def fail(self, exc: BaseException) -> None:
        """End the run with ``exc`` (the first failure wins)."""
        if not self.failed.done():
            self.failed.set_exception(exc)

    async def watch(self, silence: float) -> None:
        """Wait until the callback fails (raised here) or ``silence`` seconds pass without
        a message (raises :class:`_Reset`: heartbeats stopped)."""
        self.seen = self.loop.time()
        while not self.failed.done():
            await asyncio.wait([self.failed], timeout=self.seen + silence - self.loop.time())
            if not self.failed.done() and self.loop.time() - self.seen >= silence:
                raise _Reset("missed heartbeats")
        self.failed.result()

    def stop(self) -> None:
        """Emit nothing more; retrieve a failure nobody awaited (no asyncio warning)."""
        if not self.failed.done():
            self.failed.cancel()
        elif not self.failed.cancelled():
            self.failed.exception()

"""Delivery to many clients: one bounded queue per client, shared bytes, coalesced writes.

Every client owns a :class:`~adapters.server.client_queue.ClientQueue` (sans-I/O: bounds
in items and bytes, the overflow policy, control messages never dropped); the classes
here are the thin shells that move bytes. Live subscriptions to the same pattern share
one broker subscription, a :class:`Topic`: the events it receives during one loop
iteration (or one ``ServerConfig.write_delay`` window) become one immutable segment.
The :class:`Hub`'s flusher, one callback per iteration, hands each segment to the
topic's members: a caught-up client (SSE, NDJSON or WebSocket) is written right away
with frame bytes built once per transport kind and shared by every such client; the
others queue the segment. Then every client with something queued is written in one
``transport.write`` (clients with the same queue contents share the frame bytes). A
client whose socket is backed up gets its own writer task, which waits on the
transport's public flow control; its queue stays bounded, and its policy decides what
happens when it fills. Metrics are counted once per flush, not per write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

from aiohttp import hdrs, web
from reactivex.abc import DisposableBase

from streams import Broker, Event, GapError, MemoryBroker, OverflowPolicy, Position

from .client_queue import ClientQueue
from .config import ServerConfig
from .framing import (
    Item,
    Segment,
    gap_message,
    http_chunk,
    ndjson_chunk,
    ws_frames,
)
from .metrics import ServerMetrics

__all__ = [
    "Hub",
    "StreamClient",
    "SubHandle",
    "Subscriber",
    "Topic",
    "WsClient",
    "live_start",
    "subscribe_client",
]

log = logging.getLogger(__name__)


class Subscriber:
    """One connection's consumer side on the server (an SSE/NDJSON stream or a
    WebSocket): a :class:`ClientQueue` plus the writing shell around it. Not to be
    confused with :class:`adapters.client.Client`, the program that connects.

    The queue (sans-I/O) decides what is kept, dropped or overflows; this class only
    moves bytes. A caught-up client is written straight from the hub: a topic's segment
    becomes one frame per transport kind, shared by every such client
    (:meth:`ready_transport`). A client with something queued is written
    by the hub's flusher, and one whose socket is backed up gets its own writer task,
    which waits on the transport's public flow control (``writing_paused``, ``drain``).

    Live segments are offered (:meth:`offer`: the policy applies); control messages and
    replayed events are kept (:meth:`keep`: never dropped, see
    :mod:`adapters.server.client_queue`).
    """

    # Slots: the hub reads a few attributes of every caught-up client per event; one
    # compact object per client (no instance dict) keeps that walk cheap.
    __slots__ = (
        "_flow",
        "_out",
        "closing",
        "dirty",
        "first_at",
        "hub",
        "idle",
        "kicked",
        "kind",
        "paused",
        "queue",
        "slow_task",
        "started",
        "subs",
        "transport",
        "transport_name",
    )

    def __init__(
        self,
        hub: Hub,
        policy: OverflowPolicy,
        request: web.BaseRequest | None = None,
        name: str = "stream",
    ) -> None:
        cfg = hub.config
        self.hub = hub
        self.transport_name = name
        self.kind = name  # clients of one kind share frame bytes
        self.queue = ClientQueue(cfg.client_max_events, cfg.client_max_bytes, policy)
        # ``queue.idle`` (empty and open), copied after every change this class makes to
        # the queue (the only way it changes): the hub's per-event check reads this
        # object only, not the queue too.
        self.idle = True
        self.subs: dict[str, SubHandle | TopicHandle] = {}
        self.first_at = 0.0  # loop time the oldest queued item arrived
        self.kicked = False
        self.paused: list[SubHandle] = []  # waiting for the writer to drain the queue
        self.dirty = False  # marked for the hub's next flush
        self.started = True  # headers (and any preamble) written: events may follow
        self.slow_task: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None  # a WebSocket's close handshake
        self.transport: asyncio.WriteTransport | None = None
        self._flow: Any = None
        self._out: Any = None
        if request is not None:
            self.transport = cast("asyncio.WriteTransport | None", request.transport)
            self._flow = request.protocol  # public: ``writing_paused``
            self._out = request.writer  # public: ``drain()``

    # -- the queue ------------------------------------------------------------------
    @property
    def policy(self) -> OverflowPolicy:
        return self.queue.policy

    def set_policy(self, policy: OverflowPolicy) -> None:
        """Apply ``policy`` from now on (a WebSocket's subscriptions changed)."""
        self.queue.set_policy(policy)

    def half_full(self, size: int) -> bool:
        return self.queue.half_full(size)

    def offer(self, segment: Segment, size: int) -> None:
        """Queue a live segment (``size`` bytes) under the overflow policy; never blocks."""
        q = self.queue
        empty = not len(q)
        dropped = q.offer_live(segment, size)
        self.idle = q.idle
        self._queued(empty, dropped)

    def keep(self, item: bytes | Event, size: int) -> None:
        """Queue a control message or a replayed event: never dropped by the policy."""
        q = self.queue
        empty = not len(q)
        dropped = q.offer_kept(item, size)
        self.idle = q.idle
        self._queued(empty, dropped)

    def send_control(self, msg: bytes) -> None:
        """Queue a control message (``ack``, ``error``, ...) in order with events."""
        self.keep(msg, len(msg))

    def _queued(self, was_empty: bool, dropped: int) -> None:
        q = self.queue
        if dropped:
            self.hub.metrics.dropped.labels(q.policy.value).inc(dropped)
        if q.overflowed:
            if not self.kicked:
                self.kicked = True
                self.hub.metrics.disconnects.inc()
                self.on_overflow()
            return
        if was_empty and len(q):
            self.first_at = self.hub.loop.time()
            self.wake()

    def end(self, error: BaseException | None = None) -> None:
        """No more events: the writer sends what is queued, then the connection ends
        (``error``: ends without writing)."""
        self.queue.close(error)
        self.idle = False
        self.on_end()

    def take_queued(self) -> tuple[int, list[Item]]:
        """Everything queued (and the events among it), for one write."""
        q = self.queue
        n = q.events
        items = q.take_all()
        self.idle = q.idle
        return n, items

    def drained(self) -> None:
        """The writer emptied the queue: resume subscriptions that paused for room."""
        if self.paused and not self.queue.closed:
            paused, self.paused = self.paused, []
            for handle in paused:
                handle.resume()

    # -- writing --------------------------------------------------------------------
    def frame(self, items: Sequence[Item]) -> bytes:
        """The bytes that carry ``items`` on this client's transport."""
        raise NotImplementedError

    def writing_paused(self) -> bool:
        p = self._flow
        return p is not None and bool(p.writing_paused)

    async def drain(self) -> None:
        """Wait until the transport accepts writes again."""
        if self._out is not None and self.writing_paused():
            with contextlib.suppress(ConnectionError):
                await self._out.drain()

    def ready_transport(self) -> asyncio.WriteTransport | None:
        """The transport, when this client can be written right now without queueing:
        started, nothing queued or marked, no writer task, not closing, socket
        accepting. Plain attribute reads and one call: the hub asks it once per
        caught-up client per event."""
        if (
            self.dirty
            or self.slow_task is not None
            or self.closing is not None
            or not self.idle
            or not self.started
        ):
            return None
        t = self.transport
        if t is None or t.is_closing():
            return None
        # Paused writing means a buffer above the high-water mark: an empty buffer (the
        # usual case) answers without reading the protocol, one object less per client
        # per event (cold in cache after an idle gap: ~1 us per delivery, measured).
        if t.get_write_buffer_size() and self.writing_paused():
            return None
        return t

    def can_write_now(self) -> bool:
        """Nothing queued, no writer task, socket accepting: write without queueing."""
        return self.ready_transport() is not None

    def write(self, data: bytes) -> bool:
        """Write ``data`` now; False if the socket is gone."""
        t = self.transport
        if t is None or t.is_closing():
            return False
        if data:
            t.write(data)
        return True

    def wake(self) -> None:
        """Something new is queued: the hub's next flush writes it."""
        if not self.dirty and self.slow_task is None and self.started:
            self.dirty = True
            self.hub.mark(self)

    def flush_into(self, cache: dict[tuple[str, int], tuple[Sequence[Item], bytes]]) -> int:
        """Called by the hub: write everything queued; returns the count of events sent."""
        self.dirty = False
        if self.slow_task is not None or self.queue.closed or not self.started:
            return 0
        if self.writing_paused():
            self.slow_task = self.hub.loop.create_task(self._slow_writer())
            return 0
        n, items = self.take_queued()
        if not items:
            return 0
        if self.paused:
            self.hub.loop.call_soon(self.drained)  # after this write, in order
        key = (self.kind, id(items[0]))
        hit = cache.get(key)
        if hit is not None and len(hit[0]) == len(items) and all(map(operator.is_, hit[0], items)):
            frames = hit[1]
        else:
            frames = self.frame(items)
            cache[key] = (items, frames)
        if not self.write(frames):
            return 0
        return n

    async def _slow_writer(self) -> None:
        """The socket is backed up: wait for it, then write what is queued, until caught up."""
        hub = self.hub
        try:
            while (t := self.transport) is not None and not t.is_closing():
                await self.drain()
                q = self.queue
                if q.closed and (q.error is not None or q.overflowed):
                    break
                n, items = self.take_queued()
                if not items:
                    break
                hub.observe_latency(self.first_at)
                self.first_at = hub.loop.time()
                self.write(self.frame(items))
                hub.count_out(self.transport_name, n)
                self.drained()
        finally:
            self.slow_task = None
            if len(self.queue) and not self.queue.closed:
                self.wake()

    # -- endings --------------------------------------------------------------------
    def on_end(self) -> None:
        """The queue was closed (the handler, if waiting, should finish)."""

    def on_overflow(self) -> None:
        """The queue overflowed: disconnect (``disconnect`` policy, or control messages
        that alone fill the queue)."""

    def on_failure(self) -> None:
        """A broker subscription failed for good: end the connection (streams end
        gracefully: the queue is closed with the error; WebSockets override this)."""
        self.on_overflow()

    def unsubscribe_all(self) -> None:
        for handle in self.subs.values():
            handle.dispose()
        self.subs.clear()
        self.paused.clear()


def _position(event: Event) -> Position | None:
    seq = event.sequence
    return Position.parse(seq) if seq is not None else None


class SubHandle:
    """One broker subscription feeding a client; follows a gap by resuming from earliest.

    With ``since`` it is *resumable*: its events bypass the overflow policy, and when the
    client's queue is half full it pauses (disposes the broker subscription) and, once the
    writer has drained the queue, subscribes again after the last event it delivered.
    History, not the queue, holds the backlog; if history moved on meanwhile, the client
    gets a ``gap`` notice. A live filtered subscription follows the policy instead.
    """

    __slots__ = (
        "broker",
        "client",
        "cursor",
        "disposable",
        "disposed",
        "filter",
        "gaps_left",
        "gen",
        "id",
        "last",
        "pattern",
        "resumable",
    )

    def __init__(
        self,
        client: Subscriber,
        sub_id: str | None,
        pattern: str,
        flt: Callable[[Event], bool] | None,
    ) -> None:
        self.client = client
        self.id = sub_id
        self.pattern = pattern
        self.filter = flt
        self.disposable: DisposableBase | None = None
        self.disposed = False
        self.gen = 0
        self.broker: Broker | None = None
        self.resumable = False
        self.cursor: Position | None = None  # where the current broker subscription began
        self.last: Event | None = None  # the last event seen since then (delivered or filtered)
        self.gaps_left = _MAX_GAPS

    def start(
        self, broker: Broker, since: Position | None, live_from: Position | None = None
    ) -> None:
        """Subscribe after ``since`` (a resume), else live from ``live_from`` (where the
        broker's log ended before the client was told it is subscribed)."""
        self.broker = broker
        if since is not None:
            self.resumable = True
        self._subscribe(since if since is not None else live_from)

    def _subscribe(self, since: Position | None) -> None:
        """A broker subscription after ``since``; callbacks of earlier ones (paused, or
        replaced after a gap) are told apart by generation and do nothing."""
        broker = self.broker
        assert broker is not None
        self.gen += 1
        gen = self.gen
        self.cursor = since
        self.last = None
        on_next = self._resumable_on_next(gen) if self.resumable else self._live_on_next()
        d = broker.subscribe(self.pattern, since).subscribe(
            on_next, partial(self._on_error, gen), partial(self._on_completed, gen)
        )
        if self.disposed or gen != self.gen:
            d.dispose()  # disposed or paused meanwhile, or a gap replaced this subscription
        else:
            self.disposable = d

    def _resumable_on_next(self, gen: int) -> Callable[[Event], None]:
        """Replayed events are kept (never dropped); a half-full queue pauses."""
        flt = self.filter
        client = self.client
        keep, half_full, skip = client.keep, client.half_full, client.hub.unencodable

        def on_next(e: Event) -> None:
            if gen != self.gen:
                return  # paused (MemoryBroker may still be replaying into us)
            if flt is None or flt(e):
                try:
                    size = len(e.encode())
                except Exception as exc:
                    skip(e, exc)
                else:
                    if half_full(size):
                        self.pause()
                        return
                    keep(e, size)
            self.last = e
            self.gaps_left = _MAX_GAPS

        return on_next

    def _live_on_next(self) -> Callable[[Event], None]:
        """Live filtered events are offered under the client's overflow policy."""
        flt = self.filter
        offer, skip = self.client.offer, self.client.hub.unencodable

        def on_next(e: Event) -> None:
            if flt is None or flt(e):
                try:
                    size = len(e.encode())
                except Exception as exc:
                    skip(e, exc)
                    return
                offer((e,), size)

        return on_next

    def _on_error(self, gen: int, exc: Exception) -> None:
        """A gap resumes from the earliest retained event (the client is told); any
        other error ends the client's connection."""
        if self.disposed or gen != self.gen:
            return
        client = self.client
        if isinstance(exc, GapError) and self.gaps_left > 0:
            self.gaps_left -= 1
            msg = gap_message(exc, self.id)
            client.keep(msg, len(msg))
            self._subscribe(exc.resume_from)
            return
        client.end(exc)
        client.on_failure()

    def _on_completed(self, gen: int) -> None:
        if not self.disposed and gen == self.gen:
            self.client.end()

    def pause(self) -> None:
        """The queue has no room: stop the broker subscription, resume when drained."""
        self.gen += 1  # the current subscription's callbacks now do nothing
        if self.last is not None:
            self.cursor = _position(self.last) or self.cursor
        self.last = None
        if self.disposable is not None:
            self.disposable.dispose()
            self.disposable = None
        self.client.paused.append(self)

    def resume(self) -> None:
        if not self.disposed:
            self._subscribe(self.cursor)

    def dispose(self) -> None:
        if self.disposed:
            return
        self.disposed = True
        self.gen += 1
        if self.disposable is not None:
            self.disposable.dispose()
            self.disposable = None
        with contextlib.suppress(ValueError):
            self.client.paused.remove(self)


_MAX_GAPS = 3  # consecutive gaps without progress before the subscription fails


def subscribe_client(
    client: Subscriber,
    broker: Broker,
    sub_id: str | None,
    pattern: str,
    since: Position | None,
    flt: Callable[[Event], bool] | None = None,
    live_from: Position | None = None,
) -> SubHandle | TopicHandle:
    """Feed ``client``'s queue from ``broker``.

    Live subscriptions without a filter join the pattern's shared :class:`Topic`; a
    resume (``since``) or a filter gets its own broker subscription, where a gap is
    signalled and the replay continues from the earliest retained event. ``live_from``
    (see :func:`live_start`) makes a live subscription on a networked broker complete
    from that position, whichever process stores the next event.
    """
    key = sub_id if sub_id is not None else ""
    if since is None and flt is None:
        topic = client.hub.topic(broker, pattern, live_from)
        handle: SubHandle | TopicHandle = TopicHandle(topic, client, sub_id)
        client.subs[key] = handle
        topic.join(client, sub_id)
        return handle
    sub = SubHandle(client, sub_id, pattern, flt)
    client.subs[key] = sub
    sub.start(broker, since, live_from)
    return sub


async def live_start(broker: Broker) -> Position | None:
    """Where a live subscription must start so that every event stored after the client
    is told it is subscribed reaches it, whichever process stores it.

    Call it *before* confirming (the ``subscribed`` op, SSE headers). The embedded broker
    needs nothing (``None``): its ``subscribe()`` is live when it returns. A networked
    broker's subscription starts in a task a little later, so it is given the position
    where the log ended before the confirmation went out.
    """
    if isinstance(broker, MemoryBroker):
        return None
    return await broker.last_position()


class Topic:
    """One broker subscription shared by every live, unfiltered subscriber of a pattern.

    Events received during one loop iteration become one segment (a tuple), offered to
    each member as a single queued item: per-event work is independent of the number of
    clients, and members with the same queue contents share one encoded frame.
    """

    __slots__ = (
        "broker",
        "dirty",
        "disposable",
        "first_at",
        "gaps_left",
        "hub",
        "ids",
        "late",
        "members",
        "pattern",
        "pending",
        "pending_bytes",
    )

    def __init__(self, hub: Hub, broker: Broker, pattern: str) -> None:
        self.hub = hub
        self.broker = broker
        self.pattern = pattern
        self.members: dict[Subscriber, int] = {}  # client -> its subscriptions to this pattern
        self.ids: dict[Subscriber, list[str | None]] = {}  # their ids, named in gap notices
        self.gaps_left = _MAX_GAPS
        self.late: dict[Subscriber, int] = {}  # joined after events of this iteration arrived
        self.pending: list[Event] = []
        self.pending_bytes = 0
        self.dirty = False
        self.first_at = 0.0
        self.disposable: DisposableBase | None = None

    def start(self, live_from: Position | None = None) -> None:
        self.disposable = self.broker.subscribe(self.pattern, live_from).subscribe(
            self.on_next, self.on_error, self.on_completed
        )

    def _follow_gap(self, gap: GapError) -> None:
        """History was lost under the live subscription (a recreated stream, a limit that
        deleted what it had not read yet): every member is told, and the topic goes on
        from the earliest retained event."""
        self.gaps_left -= 1
        for client, ids in self.ids.items():
            for sub_id in ids:
                msg = gap_message(gap, sub_id)
                client.keep(msg, len(msg))
        self.disposable = None
        self.start(gap.resume_from)

    def on_next(self, event: Event) -> None:
        try:
            size = len(event.encode())
        except Exception as exc:  # raising would end the shared subscription for everyone
            self.hub.unencodable(event, exc)
            return
        if not self.pending:
            self.first_at = self.hub.loop.time()
        self.gaps_left = _MAX_GAPS
        self.pending.append(event)
        self.pending_bytes += size
        if not self.dirty:
            self.dirty = True
            self.hub.mark_topic(self)

    def on_error(self, exc: Exception) -> None:
        if isinstance(exc, GapError) and self.gaps_left > 0 and self.members:
            self._follow_gap(exc)
            return
        log.warning("live subscription to %s failed: %r", self.pattern, exc)
        for client in list(self.members):
            client.end(exc)
            client.on_failure()
        self.close()

    def on_completed(self) -> None:
        for client in list(self.members):
            client.end()
        self.close()

    def join(self, client: Subscriber, sub_id: str | None = None) -> None:
        n = self.members.get(client, 0)
        self.members[client] = n + 1
        self.ids.setdefault(client, []).append(sub_id)
        if not n and self.pending:
            self.late[client] = len(self.pending)

    def leave(self, client: Subscriber, sub_id: str | None = None) -> None:
        """One of ``client``'s subscriptions ends; it stays a member while it has others."""
        n = self.members.get(client, 0)
        if n > 1:
            self.members[client] = n - 1
            with contextlib.suppress(ValueError):
                self.ids[client].remove(sub_id)
            return
        self.members.pop(client, None)
        self.ids.pop(client, None)
        self.late.pop(client, None)
        if not self.members:
            self.close()

    def close(self) -> None:
        self.members.clear()
        self.ids.clear()
        self.hub.topics.pop((id(self.broker), self.pattern), None)
        if self.disposable is not None:
            self.disposable.dispose()
            self.disposable = None

    def flush(self, counts: dict[str, int]) -> None:
        """Offer this iteration's events to every member as one segment.

        Fast path: a caught-up member (:meth:`Subscriber.ready_transport`) is written
        right away, with one frame per transport kind built once and shared by every
        such member: per member, one check and one ``transport.write``, nothing
        allocated. The others queue the segment. Deliveries are added to ``counts``
        (per transport), which the hub turns into metrics once per flush.
        """
        self.dirty = False
        segment: Segment = tuple(self.pending)
        size = self.pending_bytes
        self.pending.clear()
        self.pending_bytes = 0
        late = self.late
        if late:
            self.late = {}
        kinds: dict[str, list[Any]] = {}  # kind -> [frame, transport name, clients written]
        kind: str | None = None
        shared: list[Any] = []
        for client in list(self.members):
            if late and client in late:
                self._offer_late(client, segment, late[client])
                continue
            t = client.ready_transport()
            if t is None:
                client.offer(segment, size)
                continue
            if client.kind != kind:
                kind = client.kind
                shared = kinds.get(kind) or kinds.setdefault(
                    kind, [client.frame((segment,)), client.transport_name, 0]
                )
            t.write(shared[0])
            shared[2] += 1
        if kinds:
            self.hub.observe_latency(self.first_at)
            n = len(segment)
            for _frame, name, k in kinds.values():
                counts[name] = counts.get(name, 0) + k * n

    @staticmethod
    def _offer_late(client: Subscriber, segment: Segment, start: int) -> None:
        """``client`` joined after ``start`` of this segment's events arrived: it gets
        the rest (the earlier ones came with its replay or predate its subscription)."""
        if start < len(segment):
            part = segment[start:]
            client.offer(part, sum(len(e.encode()) for e in part))


class TopicHandle:
    """A client's membership in a :class:`Topic`."""

    __slots__ = ("client", "disposed", "id", "topic")

    def __init__(self, topic: Topic, client: Subscriber, sub_id: str | None = None) -> None:
        self.topic = topic
        self.client = client
        self.id = sub_id
        self.disposed = False

    def dispose(self) -> None:
        if not self.disposed:
            self.disposed = True
            self.topic.leave(self.client, self.id)


class WsClient(Subscriber):
    """A WebSocket consumer written by the hub (or its own task when backed up).

    Frames are built here from cached event bytes and written to the connection's
    transport (``request.transport``); aiohttp's own writer still sends pings, pongs and
    the close frame, each a whole frame, so the two never interleave inside one.
    """

    __slots__ = ("ws",)

    def __init__(
        self,
        hub: Hub,
        ws: web.WebSocketResponse,
        policy: OverflowPolicy,
        request: web.BaseRequest,
    ) -> None:
        super().__init__(hub, policy, request, "ws")
        self.ws = ws

    def frame(self, items: Sequence[Item]) -> bytes:
        return ws_frames(items)

    def on_overflow(self) -> None:
        if self.closing is None:
            self.unsubscribe_all()
            self.closing = self.hub.loop.create_task(self.close(1008, b"consumer too slow"))

    def on_failure(self) -> None:
        if self.closing is None:
            self.unsubscribe_all()
            self.closing = self.hub.loop.create_task(
                self.close(1011, b"broker subscription failed")
            )

    async def close(self, code: int, message: bytes) -> None:
        """Close with ``code``; a peer that does not read is cut off after a short wait."""
        ws = self.ws
        try:
            async with asyncio.timeout(self.hub.config.ws_close_timeout):
                await ws.close(code=code, message=message)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            t = self.transport
            if t is not None and t.get_write_buffer_size():
                t.abort()  # closing cannot complete through a full buffer

    async def shutdown(self) -> None:
        """Graceful shutdown: stop feeding, write everything queued, then close 1001."""
        self.unsubscribe_all()
        _, items = self.take_queued()
        if items:
            self.write(ws_frames(items))
        await self.close(1001, b"server shutdown")


class StreamClient(Subscriber):
    """An SSE or NDJSON response, written by the hub like a WebSocket.

    The handler task (:meth:`run`) only keeps the response open, sends heartbeats while
    the client is idle and ends the stream; events reach the socket from the hub (one
    HTTP chunk per write, shared by every caught-up client) or, when the socket is
    backed up, from a writer task of the client's own.
    """

    __slots__ = ("_body", "_chunked", "_ended", "_head", "resp")

    def __init__(
        self,
        hub: Hub,
        policy: OverflowPolicy,
        resp: web.StreamResponse,
        request: web.BaseRequest,
        name: str,
    ) -> None:
        super().__init__(hub, policy, request, name)
        self.resp = resp
        self.started = False  # until run(): the handler may still write a preamble
        self._body: Callable[[Sequence[Item]], bytes] = ndjson_chunk
        self._chunked = True
        self._head = request.method == "HEAD"
        self._ended: asyncio.Future[None] | None = None

    def frame(self, items: Sequence[Item]) -> bytes:
        if self._head:
            return b""  # a HEAD response has no body
        body = self._body(items)
        return http_chunk(body) if self._chunked else body

    def lost(self) -> None:
        """The peer went away: release its subscriptions and queued events right away
        (the handler, woken by the closed queue, then ends)."""
        self.queue.clear()
        self.idle = self.queue.idle
        self.hub.remove(self)

    def on_end(self) -> None:
        ended = self._ended
        if ended is not None and not ended.done():
            ended.set_result(None)

    def on_overflow(self) -> None:
        self.unsubscribe_all()
        self.on_end()
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()  # the reader stopped: ending the stream gracefully cannot work

    async def run(self, frame: Callable[[Sequence[Item]], bytes], heartbeat: bytes) -> None:
        """Keep the stream open until its queue closes: events are written by the hub,
        heartbeats here while the client is idle; what is queued at a graceful end is
        written before returning."""
        hub = self.hub
        self._body = frame
        # aiohttp chunks an HTTP/1.1 response of unknown length; the header says so.
        encoding = self.resp.headers.get(hdrs.TRANSFER_ENCODING, "")
        self._chunked = encoding.lower() == "chunked"
        # Frames are shared between clients of one kind: same framing, same encoding.
        self.kind = "head" if self._head else f"{self.transport_name}/{encoding or 'raw'}"
        beat = http_chunk(heartbeat) if self._chunked else heartbeat
        self._ended = ended = hub.loop.create_future()
        self.started = True
        q = self.queue
        if len(q):
            self.wake()
        if q.closed:
            ended.set_result(None)
        period = hub.config.heartbeat
        while not ended.done():
            await asyncio.wait((ended,), timeout=period)
            if not ended.done() and self.can_write_now():
                self.write(beat)
        if q.error is not None or q.overflowed:
            return  # the broker failed or the client was too slow: it resumes
        n, items = self.take_queued()
        if items and self.write(self.frame(items)):
            hub.count_out(self.transport_name, n)
        await self.drain()

    async def shutdown(self) -> None:
        self.unsubscribe_all()
        self.end()


class Hub:
    """All clients of one app: connection accounting, the flusher, metrics.

    Topics mark themselves when an event arrives and clients when something is queued;
    one callback per loop iteration (or, with ``ServerConfig.write_delay``, per delay
    window for events) hands segments to their members and writes every marked client.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.clients: set[Subscriber] = set()
        self.connections = 0
        self.closing = False
        self._dirty: list[Subscriber] = []
        self._dirty_topics: list[Topic] = []
        self.topics: dict[tuple[int, str], Topic] = {}
        self._scheduled = False
        self._delay = config.write_delay
        self._last_events = -1e18  # loop time topics last wrote events (write delay)
        self.metrics = ServerMetrics(self._queued_events, self._queued_bytes)
        self._latency = self.metrics.latency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned_unencodable = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _queued_events(self) -> float:
        return float(sum(c.queue.events for c in self.clients))

    def _queued_bytes(self) -> float:
        return float(sum(c.queue.bytes for c in self.clients))

    def add(self, client: Subscriber) -> None:
        self.clients.add(client)
        self.metrics.connections.labels(client.transport_name).inc()
        self.metrics.connections_total.labels(client.transport_name).inc()

    def remove(self, client: Subscriber) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self.metrics.connections.labels(client.transport_name).dec()
        client.unsubscribe_all()
        client.end()

    def unencodable(self, event: Event, exc: Exception) -> None:
        """Skip an event that cannot be encoded (its data is not JSON): counted, logged once."""
        self.metrics.unencodable.inc()
        if not self._warned_unencodable:
            self._warned_unencodable = True
            log.warning("skipping event %s on %s: %s", event.id, event.subject, exc)

    def observe_latency(self, since: float) -> None:
        self._latency.observe(self.loop.time() - since)

    def count_out(self, transport: str, n: int) -> None:
        if n:
            self.metrics.events_out.labels(transport).inc(n)

    def topic(self, broker: Broker, pattern: str, live_from: Position | None = None) -> Topic:
        """The shared live subscription for ``pattern`` (made on first use, complete from
        ``live_from``; an existing topic started earlier, so it is complete from there)."""
        key = (id(broker), pattern)
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic(self, broker, pattern)
            topic.start(live_from)
        return topic

    def mark(self, client: Subscriber) -> None:
        """``client`` has something queued: write it at the next flush (this iteration's,
        or a write-delay window already open)."""
        self._dirty.append(client)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def mark_topic(self, topic: Topic) -> None:
        """``topic`` received an event: flush at the end of this loop iteration.

        With a write delay the delay is leading-edge: the first event after a quiet
        period (no events written in the last ``write_delay`` seconds) still goes out in
        this iteration; events that follow within the delay after those writes finished
        wait until it has passed and then travel together, one write per client. A
        quiet stream pays no latency; a busy one pays at most the delay and saves a
        write per client per event.
        """
        self._dirty_topics.append(topic)
        if not self._scheduled:
            self._scheduled = True
            loop = self.loop
            due = self._last_events + self._delay
            if self._delay > 0 and loop.time() < due:
                loop.call_at(due, self._flush)
            else:
                loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Hand topic segments to their members, then write every dirty client's queue:
        one write each, frames shared between identical queues; metrics once per flush."""
        topics, self._dirty_topics = self._dirty_topics, []
        counts: dict[str, int] = {}
        for topic in topics:
            topic.flush(counts)
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        cache: dict[tuple[str, int], tuple[Sequence[Item], bytes]] = {}
        if dirty:
            now = self.loop.time()
            observe = self._latency.observe
            for client in dirty:
                n = client.flush_into(cache)
                if n:
                    name = client.transport_name
                    counts[name] = counts.get(name, 0) + n
                    observe(now - client.first_at)
        for name, n in counts.items():
            self.metrics.events_out.labels(name).inc(n)
        if topics:
            self._last_events = self.loop.time()  # the window opens once writing is done

    async def shutdown(self) -> None:
        """Flush every client and close it (WebSockets with 1001)."""
        self.closing = True
        clients = list(self.clients)
        await asyncio.gather(
            *(c.shutdown() for c in clients if isinstance(c, WsClient | StreamClient)),
            return_exceptions=True,
        )

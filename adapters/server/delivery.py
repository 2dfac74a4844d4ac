"""Delivery to many clients: one bounded queue per client, coalesced writes.

Every client owns a :class:`streams.AsyncBuffer` (bounded in queued items and bytes) with
the route's overflow policy. Live subscriptions to the same pattern share one broker
subscription, a :class:`Topic`: the events it receives during one loop iteration become
one immutable segment, queued to every member as a single item. WebSocket clients are
written by the :class:`Hub`'s flusher: one ``call_soon`` callback per loop iteration
drains every client that received something and writes all of it in one
``transport.write`` (a JSON array frame built from cached event bytes; clients with the
same queue contents share the same frame bytes). A client whose
socket is backed up gets its own writer task, which waits for the socket to drain; its
queue stays bounded, and its policy decides what happens when it fills. SSE and NDJSON
responses are written by their own handler task, the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from reactivex.abc import DisposableBase

from streams import (
    AsyncBuffer,
    Broker,
    Event,
    GapError,
    MemoryBroker,
    Overflow,
    OverflowPolicy,
    Position,
)

from .config import ServerConfig
from .framing import Item, Segment, count_events, gap_message, ws_frames, ws_payloads
from .metrics import ServerMetrics

__all__ = [
    "Client",
    "Hub",
    "StreamClient",
    "SubHandle",
    "Topic",
    "WsClient",
    "item_size",
    "live_start",
    "subscribe_client",
]

log = logging.getLogger(__name__)


class Client:
    """One connected consumer: a bounded queue plus bookkeeping shared by all transports.

    The bounds (``client_max_events``/``client_max_bytes``) and the overflow policy are
    applied here, not by the queue itself: events replayed for a subscription with
    ``since`` (plain :class:`streams.Event` items) and control messages (``bytes``) are
    never dropped by the policy; only live segments (tuples) are.
    """

    transport_name: str = "stream"

    def can_write_now(self) -> bool:
        """True for a WebSocket client that can be written to right now, skipping the queue."""
        return False

    def write_now(self, frames: bytes) -> bool:
        """Write ``frames`` bypassing the queue (only when :attr:`direct`)."""
        return False

    def __init__(self, hub: Hub, policy: OverflowPolicy) -> None:
        cfg = hub.config
        self.hub = hub
        # The queue itself never refuses nor drops: ``offer`` enforces the bounds.
        self.queue: AsyncBuffer[Item] = AsyncBuffer(sys.maxsize, None, OverflowPolicy.DROP_OLDEST)
        self.max_items = cfg.client_max_events
        self.max_bytes = cfg.client_max_bytes
        self.policy = policy
        self.subs: dict[str, SubHandle | TopicHandle] = {}
        self.first_at = 0.0  # loop time the oldest queued item arrived
        self.kicked = False
        self.replaying = 0  # subscriptions with ``since``: their queued events are kept
        self.paused: list[SubHandle] = []  # waiting for the writer to drain the queue

    def full(self, size: int) -> bool:
        """True when ``size`` more bytes would exceed the queue's bounds (an item larger
        than the byte bound still travels alone through an empty queue)."""
        b = self.queue.buffer
        n = len(b)
        return bool(n) and (n >= self.max_items or b.bytes + size > self.max_bytes)

    def half_full(self, size: int) -> bool:
        """A resumed subscription fills at most half the queue, leaving room for live ones."""
        b = self.queue.buffer
        n = len(b)
        return bool(n) and (
            n >= max(1, self.max_items // 2) or b.bytes + size > self.max_bytes // 2
        )

    def offer(self, item: Item, size: int) -> None:
        """Queue live ``item`` (``size`` bytes) under the overflow policy; never blocks."""
        q = self.queue
        if q.closed:
            return
        b = q.buffer
        if len(b):
            policy = self.policy
            if policy is OverflowPolicy.LATEST_ONLY:
                if not isinstance(item, bytes):
                    self._conflate()
                    if isinstance(item, tuple) and len(item) > 1:
                        self._count_dropped(len(item) - 1)
                        item = item[-1:]
                        size = len(item[0].encode())
            elif self.full(size):
                if policy is OverflowPolicy.DROP_OLDEST:
                    if self.replaying:
                        if not self._drop_live(size) and isinstance(item, tuple):
                            self._count_dropped(len(item))  # only kept items are queued
                            return
                    else:
                        dropped = 0
                        while len(b) and self.full(size):
                            dropped += count_events(b.pop())
                        self._count_dropped(dropped)
                else:  # disconnect: refuse, close the queue with Overflow, drop the client
                    self._count_dropped(count_events(item))
                    q.close(Overflow("consumer too slow: buffer overflowed"))
                    if not self.kicked:
                        self.kicked = True
                        self.hub.metrics.disconnects.inc()
                        self.on_overflow()
                    return
        self.keep(item, size)

    def keep(self, item: Item, size: int) -> None:
        """Queue ``item`` without applying the policy (replayed events, control messages)."""
        q = self.queue
        if q.closed:
            return
        empty = not len(q.buffer)
        q.offer(item, size)
        if empty:
            self.first_at = self.hub.loop.time()
            self.wake()

    def drained(self) -> None:
        """The writer emptied the queue: resume subscriptions that paused for room."""
        if self.paused and not self.queue.closed:
            paused, self.paused = self.paused, []
            for handle in paused:
                handle.resume()

    def set_policy(self, policy: OverflowPolicy) -> None:
        """Apply ``policy`` from now on (a WebSocket's subscriptions changed)."""
        self.policy = policy

    def _conflate(self) -> None:
        """``latest_only``: drop queued live events, keep control messages and replays."""
        b = self.queue.buffer
        kept = [
            i for i in b.drain() if not isinstance(i, tuple) or self._count_dropped(count_events(i))
        ]
        for i in kept:
            b.offer(i, item_size(i))

    def _drop_live(self, size: int) -> bool:
        """``drop_oldest`` beside kept items: drop the oldest live segments until ``size``
        more bytes fit; False if kept items alone fill the queue."""
        b = self.queue.buffer
        entries = [(i, item_size(i)) for i in b.drain()]
        count = len(entries)
        total = sum(s for _, s in entries)
        dropped = 0
        for item, s in entries:
            if isinstance(item, tuple) and (
                count >= self.max_items or total + size > self.max_bytes
            ):
                dropped += len(item)
                count -= 1
                total -= s
            else:
                b.offer(item, s)
        self._count_dropped(dropped)
        return not self.full(size)

    def _count_dropped(self, n: int) -> bool:
        if n:
            self.hub.metrics.dropped.labels(self.policy.value).inc(n)
        return False

    def wake(self) -> None:
        """Something new is queued (the queue itself wakes a task waiting in ``drain``)."""

    def on_overflow(self) -> None:
        """The ``disconnect`` policy fired."""

    def on_failure(self) -> None:
        """A broker subscription failed for good: end the connection (streams end
        gracefully: the queue is closed with the error; WebSockets override this)."""
        self.on_overflow()

    def unsubscribe_all(self) -> None:
        for handle in self.subs.values():
            handle.dispose()
        self.subs.clear()
        self.paused.clear()


def item_size(item: Item) -> int:
    """The bytes a queued item accounts for.

    >>> a = Event.create(1, id="a")
    >>> item_size(b"{}"), item_size((a, a)) == 2 * item_size(a)
    (2, True)
    """
    if isinstance(item, bytes):
        return len(item)
    if isinstance(item, tuple):
        return sum([len(e.encode()) for e in item])
    return len(item.encode())


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
        client: Client,
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
        if since is not None and not self.resumable:
            self.resumable = True
            self.client.replaying += 1
        self._subscribe(since if since is not None else live_from)

    def _subscribe(self, since: Position | None) -> None:
        broker = self.broker
        assert broker is not None
        client = self.client
        flt = self.filter
        self.gen += 1
        gen = self.gen
        self.cursor = since
        self.last = None
        skip = client.hub.unencodable

        if self.resumable:
            keep = client.keep
            half_full = client.half_full

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

        else:
            offer = client.offer

            def on_next(e: Event) -> None:
                if flt is None or flt(e):
                    try:
                        size = len(e.encode())
                    except Exception as exc:
                        skip(e, exc)
                        return
                    offer((e,), size)

        def on_error(exc: Exception) -> None:
            if self.disposed or gen != self.gen:
                return
            if isinstance(exc, GapError) and self.gaps_left > 0:
                self.gaps_left -= 1
                msg = gap_message(exc, self.id)
                client.keep(msg, len(msg))
                self._subscribe(exc.resume_from)
                return
            client.queue.close(exc)
            client.on_failure()

        def on_completed() -> None:
            if not self.disposed and gen == self.gen:
                client.queue.close()

        d = broker.subscribe(self.pattern, since).subscribe(on_next, on_error, on_completed)
        if self.disposed or gen != self.gen:
            d.dispose()  # disposed or paused meanwhile, or a gap replaced this subscription
        else:
            self.disposable = d

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
        if self.resumable:
            self.client.replaying -= 1
        if self.disposable is not None:
            self.disposable.dispose()
            self.disposable = None
        with contextlib.suppress(ValueError):
            self.client.paused.remove(self)


_MAX_GAPS = 3  # consecutive gaps without progress before the subscription fails


def subscribe_client(
    client: Client,
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
        self.members: dict[Client, int] = {}  # client -> its subscriptions to this pattern
        self.ids: dict[Client, list[str | None]] = {}  # their ids, named in gap notices
        self.gaps_left = _MAX_GAPS
        self.late: dict[Client, int] = {}  # joined after events of this iteration arrived
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
            client.queue.close(exc)
            client.on_failure()
        self.close()

    def on_completed(self) -> None:
        for client in list(self.members):
            client.queue.close()
        self.close()

    def join(self, client: Client, sub_id: str | None = None) -> None:
        n = self.members.get(client, 0)
        self.members[client] = n + 1
        self.ids.setdefault(client, []).append(sub_id)
        if not n and self.pending:
            self.late[client] = len(self.pending)

    def leave(self, client: Client, sub_id: str | None = None) -> None:
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

    def flush(self) -> None:
        """Offer this iteration's events to every member as one segment."""
        self.dirty = False
        segment: Segment = tuple(self.pending)
        size = self.pending_bytes
        self.pending.clear()
        self.pending_bytes = 0
        late = self.late
        if late:
            self.late = {}
        frame = b""
        direct = 0
        for client in list(self.members):
            start = late.get(client) if late else None
            if start is None:
                # Fast path: a caught-up WebSocket client is written right away, with the
                # frame bytes shared by every such member; the others queue the segment.
                if client.can_write_now():
                    if not frame:
                        frame = ws_frames((segment,))
                    if client.write_now(frame):
                        direct += 1
                        continue
                client.offer(segment, size)
            elif start < len(segment):
                part = segment[start:]
                client.offer(part, sum(len(e.encode()) for e in part))
        if direct:
            hub = self.hub
            hub.observe_latency(self.first_at)
            hub.metrics.events_out.labels("ws").inc(direct * len(segment))


class TopicHandle:
    """A client's membership in a :class:`Topic`."""

    __slots__ = ("client", "disposed", "id", "topic")

    def __init__(self, topic: Topic, client: Client, sub_id: str | None = None) -> None:
        self.topic = topic
        self.client = client
        self.id = sub_id
        self.disposed = False

    def dispose(self) -> None:
        if not self.disposed:
            self.disposed = True
            self.topic.leave(self.client, self.id)


class WsClient(Client):
    """A WebSocket consumer written by the hub's flusher (or its own task when backed up)."""

    transport_name = "ws"

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, policy: OverflowPolicy) -> None:
        super().__init__(hub, policy)
        self.ws = ws
        writer: Any = ws._writer  # aiohttp's frame writer: we reuse its transport
        self.transport: asyncio.Transport = writer.transport
        self.protocol: Any = writer.protocol  # has ``_paused`` and ``_drain_helper()``
        self.dirty = False
        self.slow_task: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if not self.dirty and self.slow_task is None:
            self.dirty = True
            self.hub.mark(self)

    def send_control(self, msg: bytes) -> None:
        """Queue a control message (``ack``, ``error``, ...) in order with events."""
        self.offer(msg, len(msg))

    def can_write_now(self) -> bool:
        """Nothing queued, no writer task, socket accepting: write without queueing."""
        return (
            not self.dirty
            and self.slow_task is None
            and self.closing is None
            and not len(self.queue.buffer)
            and not self.protocol._paused
        )

    def write_now(self, frames: bytes) -> bool:
        return self.write(frames)

    def write(self, frames: bytes) -> bool:
        """Write frames now; False if the socket is gone."""
        t = self.transport
        if t.is_closing():
            return False
        t.write(frames)
        return True

    def flush_into(self, cache: dict[int, tuple[Sequence[Item], bytes, int]]) -> int:
        """Called by the hub: write everything queued; returns the count of events sent."""
        self.dirty = False
        if self.protocol._paused:
            self.slow_task = self.hub.loop.create_task(self._slow_writer())
            return 0
        items = self.queue.buffer.drain()
        if not items:
            return 0
        if self.paused:
            self.hub.loop.call_soon(self.drained)  # after this write, in order
        first = items[0]
        hit = cache.get(id(first))
        if hit is not None and len(hit[0]) == len(items) and all(map(operator.is_, hit[0], items)):
            frames, n = hit[1], hit[2]
        else:
            frames = ws_frames(items)
            n = count_all(items)
            cache[id(first)] = (items, frames, n)
        if not self.write(frames):
            return 0
        return n

    async def _slow_writer(self) -> None:
        """The socket is backed up: wait for it, then write what is queued, until caught up."""
        hub = self.hub
        try:
            while not self.transport.is_closing():
                with contextlib.suppress(ConnectionError):
                    await self.protocol._drain_helper()
                items = self.queue.buffer.drain()
                if not items:
                    break
                hub.observe_latency(self.first_at)
                self.first_at = hub.loop.time()
                self.write(ws_frames(items))
                hub.count_out("ws", count_all(items))
                self.drained()
        finally:
            self.slow_task = None
            if len(self.queue.buffer) and not self.dirty:
                self.dirty = True
                hub.mark(self)

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
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # closing cannot complete through a full buffer

    async def shutdown(self) -> None:
        """Graceful shutdown: stop feeding, write everything queued, then close 1001."""
        self.unsubscribe_all()
        items = self.queue.buffer.drain()
        if items:
            self.write(ws_frames(items))
        await self.close(1001, b"server shutdown")


class StreamClient(Client):
    """An SSE or NDJSON response, written by its own handler task."""

    def __init__(
        self,
        hub: Hub,
        policy: OverflowPolicy,
        resp: web.StreamResponse,
        transport: asyncio.BaseTransport | None,
        name: str,
    ) -> None:
        super().__init__(hub, policy)
        self.resp = resp
        self.transport = transport
        self.transport_name = name

    def lost(self) -> None:
        """The peer went away: release its subscriptions and queued events right away
        (the handler, woken by the closed queue, then ends)."""
        self.queue.buffer.drain()
        self.hub.remove(self)

    def on_overflow(self) -> None:
        self.unsubscribe_all()
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
            transport.abort()  # the reader stopped: ending the stream gracefully cannot work

    async def run(self, frame: Callable[[Sequence[Item]], bytes], heartbeat: bytes) -> None:
        """Write coalesced chunks until the queue closes; heartbeats while idle."""
        hub = self.hub
        period = hub.config.heartbeat
        name = self.transport_name
        while True:
            try:
                async with asyncio.timeout(period):
                    items = await self.queue.drain()
            except TimeoutError:
                await self.resp.write(heartbeat)
                continue
            except Overflow:
                return
            except Exception:
                return  # the broker failed: end the stream, the client resumes
            if not items:
                return
            hub.observe_latency(self.first_at)
            await self.resp.write(frame(items))
            hub.count_out(name, count_all(items))
            self.drained()

    async def shutdown(self) -> None:
        self.unsubscribe_all()
        self.queue.close()


class Hub:
    """All clients of one app: connection accounting, the WebSocket flusher, metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.clients: set[Client] = set()
        self.connections = 0
        self.closing = False
        self._dirty: list[WsClient] = []
        self._dirty_topics: list[Topic] = []
        self.topics: dict[tuple[int, str], Topic] = {}
        self._scheduled = False
        self._out: dict[str, int] = {}
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
        return float(sum(len(c.queue.buffer) for c in self.clients))

    def _queued_bytes(self) -> float:
        return float(sum(c.queue.buffer.bytes for c in self.clients))

    def add(self, client: Client) -> None:
        self.clients.add(client)
        self.metrics.connections.labels(client.transport_name).inc()
        self.metrics.connections_total.labels(client.transport_name).inc()

    def remove(self, client: Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self.metrics.connections.labels(client.transport_name).dec()
        client.unsubscribe_all()
        client.queue.close()

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

    def mark(self, client: WsClient) -> None:
        self._dirty.append(client)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def mark_topic(self, topic: Topic) -> None:
        self._dirty_topics.append(topic)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Hand topic segments to their members, then write every dirty WebSocket
        client's queue: one write each, frames shared between identical queues."""
        topics, self._dirty_topics = self._dirty_topics, []
        for topic in topics:
            topic.flush()
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        cache: dict[int, tuple[Sequence[Item], bytes, int]] = {}
        sent = 0
        now = self.loop.time()
        observe = self._latency.observe
        for client in dirty:
            n = client.flush_into(cache)
            if n:
                sent += n
                observe(now - client.first_at)
        if sent:
            self.metrics.events_out.labels("ws").inc(sent)

    async def shutdown(self) -> None:
        """Flush every client and close it (WebSockets with 1001)."""
        self.closing = True
        clients = list(self.clients)
        await asyncio.gather(
            *(c.shutdown() for c in clients if isinstance(c, WsClient | StreamClient)),
            return_exceptions=True,
        )


def count_all(items: Sequence[Item]) -> int:
    """Events in a batch of queued items (segments count each of their events).

    >>> a = Event.create(1, id="a")
    >>> count_all([a, (a, a), b"{}"])
    3
    """
    return sum([count_events(i) for i in items])


def payload_count(items: Sequence[Item]) -> int:
    """How many WebSocket messages a batch becomes (for tests and docs).

    >>> payload_count([Event.create(1), Event.create(2)])
    1
    """
    return len(ws_payloads(items))

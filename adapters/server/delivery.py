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
import operator
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from reactivex.abc import DisposableBase

from streams import AsyncBuffer, Broker, Event, GapError, Overflow, OverflowPolicy, Position

from .config import ServerConfig
from .framing import Item, Segment, count_events, gap_message, ws_frames, ws_payloads
from .metrics import ServerMetrics

__all__ = ["Client", "Hub", "StreamClient", "Topic", "WsClient", "subscribe_client"]


class Client:
    """One connected consumer: a bounded queue plus bookkeeping shared by all transports."""

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
        self.queue: AsyncBuffer[Item] = AsyncBuffer(
            cfg.client_max_events, cfg.client_max_bytes, policy
        )
        self.policy = policy
        self.subs: dict[str, SubHandle | TopicHandle] = {}
        self.first_at = 0.0  # loop time the oldest queued item arrived
        self.kicked = False

    def offer(self, item: Item, size: int) -> None:
        """Queue ``item`` (``size`` bytes) under the overflow policy; never blocks."""
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
                        item = item[-1]
                        size = len(item.encode())
            elif len(b) >= b.max_items or (
                b.max_bytes is not None and b.bytes + size > b.max_bytes
            ):
                if policy is OverflowPolicy.DROP_OLDEST:
                    dropped = 0
                    while len(b) and (
                        len(b) >= b.max_items
                        or (b.max_bytes is not None and b.bytes + size > b.max_bytes)
                    ):
                        dropped += count_events(b.pop())
                    self._count_dropped(dropped)
                else:  # disconnect: the queue refuses and closes itself with Overflow
                    q.offer(item, size)
                    self._count_dropped(count_events(item))
                    if not self.kicked:
                        self.kicked = True
                        self.hub.metrics.disconnects.inc()
                        self.on_overflow()
                    return
        empty = not len(b)
        q.offer(item, size)
        if empty:
            self.first_at = self.hub.loop.time()
            self.wake()

    def set_policy(self, policy: OverflowPolicy) -> None:
        """Apply ``policy`` from now on (a WebSocket's subscriptions changed)."""
        self.policy = policy
        self.queue.buffer.policy = policy

    def _conflate(self) -> None:
        """``latest_only``: drop queued events, keep queued control messages."""
        b = self.queue.buffer
        kept = [
            i for i in b.drain() if isinstance(i, bytes) or self._count_dropped(count_events(i))
        ]
        for i in kept:
            b.offer(i, len(i))  # type: ignore[arg-type]

    def _count_dropped(self, n: int) -> bool:
        if n:
            self.hub.metrics.dropped.labels(self.policy.value).inc(n)
        return False

    def wake(self) -> None:
        """Something new is queued (the queue itself wakes a task waiting in ``drain``)."""

    def on_overflow(self) -> None:
        """The ``disconnect`` policy fired."""

    def unsubscribe_all(self) -> None:
        for handle in self.subs.values():
            handle.dispose()
        self.subs.clear()


class SubHandle:
    """One broker subscription feeding a client; follows a gap by resuming from earliest."""

    __slots__ = ("client", "disposable", "disposed", "filter", "gen", "id", "pattern")

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

    def start(self, broker: Broker, since: Position | None, gaps_left: int = 3) -> None:
        client = self.client
        flt = self.filter
        offer = client.offer
        self.gen += 1
        gen = self.gen

        if flt is None:

            def on_next(e: Event) -> None:
                offer(e, len(e.encode()))

        else:

            def on_next(e: Event) -> None:
                if flt(e):
                    offer(e, len(e.encode()))

        def on_error(exc: Exception) -> None:
            if self.disposed:
                return
            if isinstance(exc, GapError) and gaps_left > 0:
                msg = gap_message(exc, self.id)
                offer(msg, len(msg))
                self.start(broker, exc.resume_from, gaps_left - 1)
                return
            client.queue.close(exc)
            client.on_overflow()

        def on_completed() -> None:
            if not self.disposed:
                client.queue.close()

        d = broker.subscribe(self.pattern, since).subscribe(on_next, on_error, on_completed)
        if self.disposed or gen != self.gen:
            d.dispose()  # disposed meanwhile, or a gap already replaced this subscription
        else:
            self.disposable = d

    def dispose(self) -> None:
        self.disposed = True
        if self.disposable is not None:
            self.disposable.dispose()


def subscribe_client(
    client: Client,
    broker: Broker,
    sub_id: str | None,
    pattern: str,
    since: Position | None,
    flt: Callable[[Event], bool] | None = None,
) -> SubHandle | TopicHandle:
    """Feed ``client``'s queue from ``broker``.

    Live subscriptions without a filter join the pattern's shared :class:`Topic`; a
    resume (``since``) or a filter gets its own broker subscription, where a gap is
    signalled and the replay continues from the earliest retained event.
    """
    key = sub_id if sub_id is not None else ""
    if since is None and flt is None:
        topic = client.hub.topic(broker, pattern)
        handle: SubHandle | TopicHandle = TopicHandle(topic, client)
        client.subs[key] = handle
        topic.join(client)
        return handle
    sub = SubHandle(client, sub_id, pattern, flt)
    client.subs[key] = sub
    sub.start(broker, since)
    return sub


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
        "hub",
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
        self.members: dict[Client, None] = {}
        self.late: dict[Client, int] = {}  # joined after events of this iteration arrived
        self.pending: list[Event] = []
        self.pending_bytes = 0
        self.dirty = False
        self.first_at = 0.0
        self.disposable: DisposableBase | None = None

    def start(self) -> None:
        self.disposable = self.broker.subscribe(self.pattern).subscribe(
            self.on_next, self.on_error, self.on_completed
        )

    def on_next(self, event: Event) -> None:
        if not self.pending:
            self.first_at = self.hub.loop.time()
        self.pending.append(event)
        self.pending_bytes += len(event.encode())
        if not self.dirty:
            self.dirty = True
            self.hub.mark_topic(self)

    def on_error(self, exc: Exception) -> None:
        for client in list(self.members):
            client.queue.close(exc)
            client.on_overflow()
        self.close()

    def on_completed(self) -> None:
        for client in list(self.members):
            client.queue.close()
        self.close()

    def join(self, client: Client) -> None:
        self.members[client] = None
        if self.pending:
            self.late[client] = len(self.pending)

    def leave(self, client: Client) -> None:
        self.members.pop(client, None)
        self.late.pop(client, None)
        if not self.members:
            self.close()

    def close(self) -> None:
        self.members.clear()
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

    __slots__ = ("client", "topic")

    def __init__(self, topic: Topic, client: Client) -> None:
        self.topic = topic
        self.client = client

    def dispose(self) -> None:
        self.topic.leave(self.client)


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
        first = items[0]
        hit = cache.get(id(first))
        if hit is not None and len(hit[0]) == len(items) and all(map(operator.is_, hit[0], items)):
            frames, n = hit[1], hit[2]
        else:
            frames = ws_frames(items)
            n = sum([isinstance(i, Event) for i in items])
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
                hub.count_out("ws", sum(isinstance(i, Event) for i in items))
        finally:
            self.slow_task = None
            if len(self.queue.buffer) and not self.dirty:
                self.dirty = True
                hub.mark(self)

    def on_overflow(self) -> None:
        if self.closing is None:
            self.unsubscribe_all()
            self.closing = self.hub.loop.create_task(self.close(1008, b"consumer too slow"))

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
            hub.count_out(name, sum(isinstance(i, Event) for i in items))

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

    def observe_latency(self, since: float) -> None:
        self._latency.observe(self.loop.time() - since)

    def count_out(self, transport: str, n: int) -> None:
        if n:
            self.metrics.events_out.labels(transport).inc(n)

    def topic(self, broker: Broker, pattern: str) -> Topic:
        """The shared live subscription for ``pattern`` (made on first use)."""
        key = (id(broker), pattern)
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic(self, broker, pattern)
            topic.start()
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


def payload_count(items: Sequence[Item]) -> int:
    """How many WebSocket messages a batch becomes (for tests and docs).

    >>> payload_count([Event.create(1), Event.create(2)])
    1
    """
    return len(ws_payloads(items))

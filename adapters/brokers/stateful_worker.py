"""Keyed worker groups: one long-lived pipeline per partition, with checkpoints in the broker.

``rxstreams worker app:pipeline --broker URL --group G --pattern P --key data.room
--partitions 16 --to out.counts`` starts one *member*; every member of ``G`` runs this loop:

1. **Membership.** Heartbeat into the group's live set every third of the lease period;
   the units (``router``, ``p0``..``p<N-1>``) are dealt over the live members
   (:func:`~.partitions.assign`), so members joining or leaving rebalance within a lease
   period.
2. **Leases.** A member starts a unit only once it holds that unit's lease, renews it on
   every heartbeat, and stops the unit at once when a renewal fails. A unit it should no
   longer own is stopped cleanly: final checkpoint, then the lease is released.
3. **Router.** The owner of ``router`` reads ``P`` in log order from its checkpointed
   position and republishes each event (content unchanged; id ``rxpart:<G>:<id>``, the
   input's id and subject in the ``rxid``/``rxsubject`` extensions) to
   ``rxpart.<G>.<partition>`` in the group's partition log (:mod:`.partition_logs`: a
   stream of its own), ``partition`` being the stable hash of its key (the hash of
   :func:`operators.partition`) modulo ``N``. One router keeps every partition in input
   order, which windows, ``dedupe`` and rate limits depend on (competing consumers would
   reorder a key's events). A replayed republish is dropped by id (NATS duplicate window,
   2 minutes), or never happens (Redis: one fenced script with the router's position). An
   event without a usable key goes to ``rxdead.<G>`` (dead letter): the partition goes on.
4. **Partitions.** The owner of ``p<i>`` claims it (fencing every earlier owner), restores
   the last checkpoint into a fresh pipeline (every :class:`~operators.state.Stateful`
   stage, by name) and feeds it its partition from the checkpointed position on, then
   live. The pipeline is built and subscribed once: operators see one continuous stream.
   Every ``checkpoint_every`` events or ``checkpoint_seconds`` seconds (and within 0.2 s
   when its input runs dry) it commits the stages' snapshots, the last input position and
   the outputs of those inputs, under ids ``<G>:<unit>:<partition offset>:<output index>``,
   through the fenced path (:class:`~.leases.StateStore`): a member fenced out commits
   nothing and publishes nothing.

A commit that fails (the broker away, :class:`~.leases.CheckpointTooLarge`, or
:class:`~.leases.Fenced`) stores nothing and publishes nothing. It is logged as an error and
counted (:attr:`Member.checkpoint_failures`, per unit; :attr:`UnitStatus.checkpoint_failures`
and ``last_error``), and the unit stops: its input stays uncovered, and the member starts the
unit again on its next heartbeat (another member, if the lease moved), from the last stored
checkpoint, replaying what that checkpoint does not cover. Nothing is ever acknowledged past
a stored checkpoint: the stored position is the only acknowledgement a partition makes.

Outputs are published only with the checkpoint that covers their inputs, so they lag input
by up to one checkpoint interval (Redis: in the same script as the checkpoint, exactly
once; NATS: after the checkpoint, from its outbox, deduplicated by id within the stream's
duplicate window). An output emitted outside an input (a timer) takes the id of the last
input, so only outputs caused by inputs replay identically. Producers never know about
partitions. A checkpoint whose input position is gone (the stream was recreated, or
retention evicted unread events) stops the worker with :class:`PipelineFailed` rather than
skip silently; a unit without checkpoint starts at the oldest retained event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from reactivex import Observable
from reactivex.subject import Subject

from operators.state import Stateful, collecting, restore_all, snapshot_all
from streams import Event, GapError, Position
from streams.errors import PipelineError

from .leases import Fenced, Lease, Routed, StateStore
from .partition_logs import PartitionLogs
from .partitions import (
    ROUTER,
    Checkpoint,
    CheckpointPolicy,
    assign,
    dead_letter_subject,
    from_partition,
    is_internal,
    key_function,
    output_event,
    output_id,
    partition_of,
    partition_subject,
    to_partition,
    units,
)

__all__ = [
    "CheckpointFailed",
    "KeyedSettings",
    "PartitionPipeline",
    "PipelineFailed",
    "run_keyed_worker",
    "state_store",
]

log = logging.getLogger(__name__)
_SLICE = 32  # events fed to a pipeline between two chances for the event loop to run
_IDLE_COMMIT = 0.2  # seconds between checkpoints of a partition whose input ran dry


class PipelineFailed(PipelineError):
    """The user's pipeline ended with an error: the worker stops (its input is replayed)."""


class CheckpointFailed(Exception):
    """A checkpoint could not be stored: the unit stops, and is started again from the last
    stored checkpoint (its uncovered input replayed)."""


def state_store(broker: Any, group: str, parts: PartitionLogs | None = None) -> StateStore:
    """The store of ``group``'s leases and checkpoints in ``broker`` itself. Without
    ``parts`` it makes its own partition logs, and its ``close()`` closes them too."""
    owns = parts is None
    logs = PartitionLogs(broker, group) if parts is None else parts
    if hasattr(broker, "log_key"):
        from .redis_state import RedisState

        return RedisState(broker, group, logs, owns_parts=owns)
    from .nats_state import NatsState

    return NatsState(broker, group, logs, owns_parts=owns)


class PartitionPipeline:
    """One partition's pipeline, built and subscribed once, fed one event at a time.

    >>> from adapters.brokers.stages import dedupe_by
    >>> p = PartitionPipeline(lambda obs: obs.pipe(dedupe_by(lambda e: e.data)))
    >>> [len(p.feed(Event.create(x))) for x in (1, 1, 2)]
    [1, 0, 1]
    >>> q = PartitionPipeline(lambda obs: obs.pipe(dedupe_by(lambda e: e.data)))
    >>> q.restore(p.snapshot())
    >>> [len(q.feed(Event.create(x))) for x in (1, 3)]
    [0, 1]
    """

    def __init__(self, pipeline: Callable[[Observable[Event]], Observable[Any]]) -> None:
        self._input: Subject[Event] = Subject()
        self._out: list[Any] = []
        self._feeding = False
        self.error: BaseException | None = None
        self.on_output: Callable[[], None] | None = None  # an output outside feed (a timer)
        with collecting() as stages:
            result = pipeline(self._input)
            if not isinstance(result, Observable):
                raise TypeError(
                    f"a keyed pipeline must return an Observable, not {type(result).__name__}"
                )
            self._subscription = result.subscribe(self._emit, self._fail)
        self.stages: dict[str, Stateful] = stages

    def _emit(self, value: Any) -> None:
        self._out.append(value)
        if not self._feeding and self.on_output is not None:
            self.on_output()

    def _fail(self, error: BaseException) -> None:
        self.error = error

    def feed(self, event: Event) -> list[Any]:
        """What the pipeline emitted for ``event`` (and anything emitted since the last
        call); raises :class:`PipelineFailed` when it failed."""
        self._feeding = True
        try:
            self._input.on_next(event)
        finally:
            self._feeding = False
        return self.drain()

    def drain(self) -> list[Any]:
        """What the pipeline emitted since the last call (timers: outside any input);
        raises :class:`PipelineFailed` when it failed."""
        if self.error is not None:
            raise PipelineFailed(f"pipeline failed: {self.error!r}") from self.error
        out, self._out[:] = list(self._out), []
        return out

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def snapshot(self) -> dict[str, Any]:
        return snapshot_all(self.stages)

    def restore(self, state: dict[str, Any]) -> None:
        """Restore every stage from a checkpoint's state (nothing to do for a fresh one);
        :class:`~operators.state.StageSetError` (the worker stops) when the checkpoint was
        taken by a pipeline with other stateful stages."""
        if state:
            restore_all(self.stages, state)

    def close(self) -> None:
        self._subscription.dispose()


class Inbox:
    """A subscription read in batches, bounded: past ``high`` queued events it unsubscribes
    and later subscribes again after the last event it kept (never an unbounded queue)."""

    def __init__(
        self, broker: Any, pattern: str, since: Position, high: int = 8192, skip_gap: bool = False
    ) -> None:
        self.broker, self.pattern, self.high, self.skip_gap = broker, pattern, high, skip_gap
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._error: BaseException | None = None
        self._since = since
        self._subscription: Any = None
        self._paused = False  # unsubscribed (queue full, or a gap to skip): events ignored
        self._interrupted = False
        self._subscribe()

    def _subscribe(self) -> None:
        self._paused = False
        source = self.broker.subscribe(self.pattern, since=self._since)
        subscription = source.subscribe(self._next, self._failed, self._ended)
        if self._paused:  # a broker replaying within subscribe() filled the queue already
            subscription.dispose()
        else:
            self._subscription = subscription

    def _next(self, event: Event) -> None:
        if self._paused:
            return  # read again after _since when the queue has room
        self._queue.append(event)
        self._wake.set()
        if len(self._queue) >= self.high:
            self._since = Position.parse(event.sequence or "")
            self._pause()

    def _pause(self) -> None:
        self._paused = True
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.dispose()

    def _failed(self, error: BaseException) -> None:
        if self.skip_gap and isinstance(error, GapError) and error.resume_from is not None:
            self.skip_gap = False
            self._since = error.resume_from
            self._pause()  # subscribed again on the next take
            self._wake.set()
            return
        self._error = error
        self._wake.set()

    def _ended(self) -> None:
        self._failed(ConnectionError(f"subscription to {self.pattern!r} ended"))

    def nudge(self) -> None:
        """End the wait in progress in :meth:`take` (it returns what it has, maybe nothing)."""
        self._wake.set()

    def interrupt(self) -> None:
        """End any wait in :meth:`take` now, and every later one at once."""
        self._interrupted = True
        self._wake.set()

    async def take(self, most: int, timeout: float) -> list[Event]:
        """Up to ``most`` events, waiting at most ``timeout`` seconds for the first."""
        if not self._queue and self._error is None and not self._interrupted:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        if not self._queue and self._error is not None:
            raise self._error
        batch = [self._queue.popleft() for _ in range(min(most, len(self._queue)))]
        if self._paused and self._error is None and len(self._queue) < self.high // 4:
            self._subscribe()
        return batch

    def close(self) -> None:
        self._pause()
        self._error = self._error or ConnectionError("inbox closed")


@dataclass(slots=True)
class KeyedSettings:
    """A keyed worker group's configuration (the same in every member)."""

    group: str
    pattern: str
    key: Callable[[Event], Any]
    partitions: int
    to: str | None = None
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    lease: float = 5.0
    batch: int = 512


@dataclass(slots=True)
class UnitStatus:
    """What a member reports about a unit it runs (for graphs, tests and benchmarks)."""

    unit: str
    position: str | None = None
    events: int = 0
    state_bytes: int = 0
    checkpoints: int = 0
    checkpoint_failures: int = 0  # commits of this unit that failed, in this member
    last_error: str | None = None


async def _start_of(broker: Any) -> Position:
    """Position 0 of the current epoch: a unit without checkpoint starts at the oldest event."""
    return Position((await broker.last_position()).epoch, 0)


class _Runner:
    """One unit in one member: a task, a lease and a flag asking it to stop cleanly."""

    def __init__(self, member: Member, lease: Lease) -> None:
        self.member = member
        self.lease = lease
        self.stopping = False
        self.inbox: Inbox | None = None
        self.status = UnitStatus(lease.unit)
        self.status.checkpoint_failures = member.checkpoint_failures[lease.unit]
        body = self._route if lease.unit == ROUTER else self._partition
        self.task = asyncio.create_task(body(), name=f"rx-{lease.unit}")

    def stop_soon(self) -> None:
        """Ask for a clean stop: the batch in hand, a final checkpoint, then the end."""
        self.stopping = True
        if self.inbox is not None:
            self.inbox.interrupt()

    async def stop(self) -> None:
        self.stop_soon()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.task

    async def _inbox(self, broker: Any, pattern: str, checkpoint: Checkpoint | None) -> Inbox:
        since = (
            Position.parse(checkpoint.position)
            if checkpoint is not None and checkpoint.position
            else await _start_of(broker)
        )
        # Without a checkpoint, starting at the oldest retained event is not a loss.
        fresh = checkpoint is None or not checkpoint.position
        self.inbox = Inbox(broker, pattern, since, skip_gap=fresh)
        if self.stopping:
            self.inbox.interrupt()
        return self.inbox

    async def _route(self) -> None:
        m, s = self.member, self.member.settings
        store = m.store
        checkpoint = await store.claim(self.lease)
        inbox = await self._inbox(m.broker, s.pattern, checkpoint)
        count = checkpoint.events if checkpoint else 0
        dead = dead_letter_subject(s.group)
        try:
            while not self.stopping:
                batch = await _take(inbox, s.batch)
                if not batch:
                    continue
                routed: list[Routed] = []
                for event in batch:
                    if is_internal(event.subject):
                        continue
                    try:
                        p = partition_of(s.key(event), s.partitions)
                    except Exception as exc:  # a bad key is a dead letter, never a stop
                        routed.append((dead, _dead_letter(event, exc)))
                        continue
                    routed.append((partition_subject(s.group, p), to_partition(event, s.group, p)))
                count += len(batch)
                position = batch[-1].sequence
                checkpoint = Checkpoint(position, {}, [], count)
                await self._store(store.route(self.lease, checkpoint, routed), checkpoint)
                self.status.position, self.status.events = position, count
                self.status.checkpoints += 1
        finally:
            inbox.close()

    async def _partition(self) -> None:
        m, s = self.member, self.member.settings
        unit, store = self.lease.unit, m.store
        checkpoint = await store.claim(self.lease) or Checkpoint()
        core = PartitionPipeline(m.pipeline)
        core.restore(checkpoint.state)
        subject = partition_subject(s.group, int(unit[1:]))
        inbox = await self._inbox(m.parts.of(int(unit[1:])), subject, checkpoint)
        core.on_output = inbox.nudge
        position, count, pending_events = checkpoint.position, checkpoint.events, 0
        pending: list[Routed] = []
        last_commit = time.monotonic()
        # Outputs of timers (no input caused them) are ids of this claim, never replayed.
        offset = Position.parse(position).offset if position else 0
        timed = 0
        try:
            while True:
                elapsed = time.monotonic() - last_commit
                wait = max(0.01, s.checkpoint.seconds - elapsed)
                if pending_events or pending:  # outputs wait for a checkpoint: not long
                    wait = min(wait, max(0.01, _IDLE_COMMIT - elapsed))
                if core.has_output:
                    wait = 0.01
                batch = [] if self.stopping else await _take(inbox, s.batch, wait)
                for i, raw in enumerate(batch):
                    if i and not i % _SLICE:
                        await asyncio.sleep(0)  # heartbeats and other units run in between
                    event = from_partition(raw)
                    offset = Position.parse(raw.sequence or "").offset
                    for k, value in enumerate(core.feed(event)):
                        out_id = output_id(s.group, unit, offset, k)
                        pending.append(output_event(value, out_id, event, s.to))
                    position = raw.sequence
                for value in core.drain():  # emitted by a timer since the last input
                    late_id = f"{s.group}:{unit}:{offset}:t{self.lease.token}.{timed}"
                    timed += 1
                    cause = Event.create(None)
                    pending.append(output_event(value, late_id, cause, s.to))
                pending_events += len(batch)
                count += len(batch)
                elapsed = time.monotonic() - last_commit
                # Also when the input ran dry (caught up, or a quiet moment): outputs wait
                # for the checkpoint that covers them, so waiting longer only adds latency.
                work = pending_events > 0 or bool(pending)
                drained = (
                    s.checkpoint.every > 0 and work and len(batch) < s.batch
                    and elapsed >= _IDLE_COMMIT
                )  # fmt: skip
                if s.checkpoint.due(pending_events, elapsed) or drained or (self.stopping and work):
                    snap = Checkpoint(position, core.snapshot(), [], count)
                    await self._store(store.commit(self.lease, snap, pending), snap)
                    self.status.state_bytes = snap.size
                    pending, pending_events, last_commit = [], 0, time.monotonic()
                self.status.position, self.status.events = position, count
                if self.stopping:
                    return
        finally:
            inbox.close()
            core.close()

    async def _store(self, commit: Awaitable[None], checkpoint: Checkpoint) -> None:
        """Await a commit of ``checkpoint``; a failure is logged as an error, counted, and
        ends the unit (:class:`~.leases.Fenced` as it is, anything else as
        :class:`CheckpointFailed`): nothing after the last stored checkpoint is covered."""
        try:
            await commit
        except Exception as exc:
            unit = self.lease.unit
            self.member.checkpoint_failures[unit] += 1
            self.status.checkpoint_failures = self.member.checkpoint_failures[unit]
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.error(
                "%s: checkpoint of %s at %s failed (%s); the unit stops and starts again "
                "from its last stored checkpoint, in whichever member holds its lease",
                self.member.name, unit, checkpoint.position, self.status.last_error,
            )  # fmt: skip
            if isinstance(exc, Fenced):
                raise
            raise CheckpointFailed(f"{unit}: {self.status.last_error}") from exc
        self.status.checkpoints += 1


async def _take(inbox: Inbox, most: int, timeout: float = 0.5) -> list[Event]:
    try:
        return await inbox.take(most, timeout)
    except GapError as gap:
        raise PipelineFailed(f"input lost before it was processed: {gap}") from gap


def _dead_letter(event: Event, error: Exception) -> Event:
    return Event(
        id=f"dead:{event.id}",
        source="rxstreams/router",
        type="rxstreams.deadletter",
        time=event.time,
        data={"event": event.to_dict(), "error": f"{type(error).__name__}: {error}"},
    )


class Member:
    """One member of a keyed worker group (see the module docstring)."""

    def __init__(
        self,
        broker: Any,
        pipeline: Callable[[Observable[Event]], Observable[Any]],
        settings: KeyedSettings,
        name: str | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.broker = broker
        self.pipeline = pipeline
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
        self.parts = PartitionLogs(broker, settings.group)
        self.store = store or state_store(broker, settings.group, self.parts)
        self.units = units(settings.partitions)
        self.runners: dict[str, _Runner] = {}
        self.leaving: dict[str, _Runner] = {}  # stopping cleanly; leases held until done
        self.checkpoint_failures: Counter[str] = Counter()
        """Commits that failed, per unit (each one logged as an error; the unit restarted)."""

    def status(self) -> dict[str, UnitStatus]:
        """The units this member runs now, with their position, events and state size."""
        return {unit: r.status for unit, r in self.runners.items()}

    async def run(self, stop: asyncio.Event) -> None:
        beat = self.settings.lease / 3
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except (PipelineFailed, TypeError, ValueError):
                    raise
                except Exception as exc:  # the broker is slow or away: the leases tell
                    log.warning("%s: heartbeat failed (%r); trying again", self.name, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), beat)
        finally:
            await self.shutdown()

    async def tick(self) -> None:
        """One heartbeat: renew, reap, hand over what moved away, start what is ours.

        Nothing here waits for a unit to stop (a stopping unit checkpoints on its own and
        its lease is released once it is done), so renewals are never late."""
        ttl = self.settings.lease
        # Every await here waits for a turn of an event loop the pipelines keep busy: the
        # round trips of one step go out together.
        live, _ = await asyncio.gather(self.store.heartbeat(self.name, ttl), self._renew(ttl))
        mine = assign(self.units, live).get(self.name, [])
        self._reap()
        await self._release_finished()
        for unit in [u for u in self.runners if u not in mine]:
            runner = self.runners.pop(unit)
            runner.stop_soon()
            self.leaving[unit] = runner
        wanted = [u for u in mine if u not in self.runners and u not in self.leaving]
        leases = await asyncio.gather(*(self.store.acquire(u, self.name, ttl) for u in wanted))
        for lease in leases:
            if lease is not None:
                self.runners[lease.unit] = _Runner(self, lease)

    async def _renew(self, ttl: float) -> None:
        held = [*self.runners.values(), *self.leaving.values()]
        kept = await asyncio.gather(*(self.store.renew(r.lease, ttl) for r in held))
        for runner, ok in zip(held, kept, strict=True):
            if not ok:
                unit = runner.lease.unit
                log.warning("%s: lease on %s lost; stopping it", self.name, unit)
                runner.task.cancel()
                self.runners.pop(unit, None)
                self.leaving.pop(unit, None)

    def _reap(self) -> None:
        for unit, runner in list(self.runners.items()):
            if runner.task.done():
                del self.runners[unit]
                self._check(runner)

    def _check(self, runner: _Runner) -> None:
        """Log how a finished unit ended; raise when the pipeline itself failed."""
        if runner.task.cancelled():
            return
        exc = runner.task.exception()
        if isinstance(exc, Fenced | CheckpointFailed):
            log.info("%s: %s stopped (%s); starting it again", self.name, runner.lease.unit, exc)
        elif isinstance(exc, PipelineFailed | TypeError | ValueError):
            raise exc
        elif exc is not None:
            log.warning("%s: %s failed (%r); trying again", self.name, runner.lease.unit, exc)

    async def _release_finished(self) -> None:
        done = [r for r in self.leaving.values() if r.task.done()]
        for runner in done:
            del self.leaving[runner.lease.unit]
        released = (self.store.release(r.lease) for r in done)
        await asyncio.gather(*released, return_exceptions=True)
        for runner in done:
            self._check(runner)

    async def shutdown(self) -> None:
        """Stop every unit cleanly (final checkpoints), release the leases, leave."""
        try:
            self.leaving.update(self.runners)
            self.runners.clear()
            await asyncio.gather(*(r.stop() for r in self.leaving.values()))
            with contextlib.suppress(Exception):
                await self._release_finished()
            with contextlib.suppress(Exception):
                await self.store.leave(self.name)
        finally:
            await self.store.close()
            await self.parts.close()


async def run_keyed_worker(
    broker: Any,
    pipeline: Callable[[Observable[Event]], Observable[Any]],
    group: str,
    pattern: str,
    key: str | Callable[[Event], Any],
    partitions: int,
    to: str | None = None,
    checkpoint_every: int = 1000,
    checkpoint_seconds: float = 1.0,
    lease: float = 5.0,
    stop: asyncio.Event | None = None,
    name: str | None = None,
    on_member: Callable[[Member], None] | None = None,
) -> None:
    """Run one member of a keyed worker group until ``stop`` is set (or the pipeline
    fails); ``broker`` is a NATS or Redis broker instance."""
    settings = KeyedSettings(
        group,
        pattern,
        key_function(key),
        partitions,
        to,
        CheckpointPolicy(checkpoint_every, checkpoint_seconds),
        lease,
    )
    member = Member(broker, pipeline, settings, name)
    if on_member is not None:
        on_member(member)
    await member.run(stop or asyncio.Event())

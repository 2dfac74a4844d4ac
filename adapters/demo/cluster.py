"""The chat pipeline on a networked broker: once per cluster, as a keyed worker group.

On the embedded broker the demo process subscribes to its inbound subjects and runs
:func:`~adapters.demo.pipeline.build_pipeline` itself. Several demo processes on one NATS
or Redis stream cannot all do that: each would deliver every message once more, and
``dedupe`` and the per-user rate limits would be split between them. So on a networked
broker every demo process is a *member* of one keyed worker group (:mod:`adapters.brokers.
stateful_worker`), group ``demo``, partitioned by room:

- input: ``chat.>`` in log order, keyed by ``subject[1]`` (the room of
  ``chat.<room>.in[.<nick>]``), so each room's messages, typing and presence are processed
  by one partition's pipeline, owned by one live demo process at a time;
- a closed connection leaves the rooms it joined in whatever partitions hold them: the demo
  process serving it publishes ``demo.conn.closed`` once per partition, to
  ``chat.<k>.conn`` where ``k`` is a token that hashes to that partition
  (:func:`closed_subjects`);
- outputs (``room.*``, ``user.*.rejected``, ``stats.rooms``) are published with the
  checkpoint covering their inputs, under deterministic ids, so each reaches subscribers of
  any server once. The room membership (:class:`~.pipeline.Presence`), ``dedupe``, batches
  and windows are checkpointed and move with their partition when members come and go.

The same pipeline runs as a standalone worker too::

    rxstreams worker adapters.demo.cluster:pipeline --broker nats://127.0.0.1:4222 \\
        --group demo --pattern 'chat.>' --key 'subject[1]' --partitions 4

>>> closed_subjects(2)
['chat.conn-0.conn', 'chat.conn-4.conn']
>>> from adapters.brokers.partitions import key_function, partition_of
>>> key = key_function(KEY)
>>> [partition_of(key(Event.create(None, subject=s)), 2) for s in closed_subjects(2)]
[0, 1]
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.scheduler.eventloop import AsyncIOScheduler

from adapters.brokers.partitions import partition_of
from streams import Event

from .pipeline import Rules, build_pipeline

__all__ = [
    "GROUP",
    "KEY",
    "PARTITIONS",
    "PATTERN",
    "SOURCE",
    "closed_subjects",
    "keyed_pipeline",
    "pipeline",
]

GROUP = "demo"
PATTERN = "chat.>"
KEY = "subject[1]"
PARTITIONS = 4
SOURCE = "rxstreams/demo"


@functools.cache
def closed_subjects(partitions: int) -> list[str]:
    """One subject per partition, in partition order, that the group routes to it."""
    found: dict[int, str] = {}
    j = 0
    while len(found) < partitions:
        token = f"conn-{j}"
        found.setdefault(partition_of(token, partitions), f"chat.{token}.conn")
        j += 1
    return [found[i] for i in range(partitions)]


def keyed_pipeline(
    rules: Rules | None = None,
) -> Callable[[Observable[Event]], Observable[Event]]:
    """The chat pipeline as a keyed worker group wants it: ``Observable[Event]`` in, the
    events to publish out (``send(subject, type, items)`` becomes one event per item).
    Timers run on the asyncio loop the worker runs on."""

    def run(inbound: Observable[Event]) -> Observable[Event]:
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def send(subject: str, type: str, items: list[Any]) -> None:
                for data in items:
                    observer.on_next(Event.create(data, type=type, subject=subject, source=SOURCE))

            sch = AsyncIOScheduler(asyncio.get_running_loop())
            return build_pipeline(inbound, send, rules, scheduler=sch)

        return reactivex.create(subscribe)

    return run


pipeline = keyed_pipeline()
"""The demo's rules as a keyed pipeline (``rxstreams worker adapters.demo.cluster:pipeline``)."""

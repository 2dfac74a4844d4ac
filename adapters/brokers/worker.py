"""Competing-consumer workers: ``rxstreams worker MODULE:PIPELINE --broker URL``.

Every worker started with the same ``--group`` shares the events of ``--pattern``: each
event goes to one member (NATS durable pull consumer, Redis consumer group). A worker
acknowledges an event only after the pipeline finished with it, so a crashed worker's
unacknowledged events are handed to another member after ``ack_wait`` seconds (set in the
URL, ``?ack_wait=30``): every event is processed at least once, and a duplicate carries
the same event id as the original.

A pipeline is either

- a function ``Observable[Event] -> Observable``: it runs once per delivered batch, and the
  batch is acknowledged when the returned observable completes (operators that keep state
  across events, such as windows, see one batch at a time); or
- an ``async`` function ``Event -> Any``, awaited for each event in order.

An error from the pipeline stops the worker with that error; its batch is redelivered.

Stateful pipelines: with ``--partitions N --key PATH`` the group is a *keyed* worker group
(:mod:`.stateful_worker`): events are routed by key to ``N`` partitions, each partition runs
one long-lived pipeline owned by one member at a time (lease and fencing token in the
broker), its operators' state is checkpointed with the input position, and outputs (to the
subjects their events carry, or ``--to``) get deterministic ids so a replay is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import reactivex
from reactivex import Observable

from streams import Event, MemoryBroker

from . import from_url
from .errors import BrokerURLError

__all__ = [
    "Pipeline",
    "add_keyed_arguments",
    "as_batch_handler",
    "load_pipeline",
    "main",
    "parser",
    "run_worker",
]

Pipeline = Callable[[Observable[Event]], Observable[Any]] | Callable[[Event], Awaitable[Any]]


def load_pipeline(target: str) -> Pipeline:
    """Import ``"package.module:attribute"``.

    >>> load_pipeline("builtins:len")
    <built-in function len>
    >>> load_pipeline("no-colon")
    Traceback (most recent call last):
    ...
    ValueError: pipeline 'no-colon': expected MODULE:PIPELINE, e.g. myapp.jobs:resize
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"pipeline {target!r}: expected MODULE:PIPELINE, e.g. myapp.jobs:resize")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"pipeline {target!r} is not callable")
    return obj  # type: ignore[no-any-return]


async def _until_complete(source: Observable[Any]) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(exc: Exception | None = None) -> None:
        def settle() -> None:
            if done.done():
                return
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)

        loop.call_soon_threadsafe(settle)

    disposable = source.subscribe(on_error=finish, on_completed=finish)
    try:
        await done
    finally:
        disposable.dispose()


def as_batch_handler(pipeline: Pipeline) -> Callable[[list[Event]], Awaitable[None]]:
    """Adapt either kind of pipeline to ``async handle(batch)`` (returns when it is done).

    >>> from reactivex import operators as ops
    >>> seen = []
    >>> handle = as_batch_handler(lambda obs: obs.pipe(ops.do_action(seen.append)))
    >>> asyncio.run(handle([Event.create(1), Event.create(2)]))
    >>> [e.data for e in seen]
    [1, 2]
    """
    if inspect.iscoroutinefunction(pipeline):
        per_event: Callable[[Event], Awaitable[Any]] = pipeline  # type: ignore[assignment]

        async def handle_each(batch: list[Event]) -> None:
            for event in batch:
                await per_event(event)

        return handle_each

    def _observable(batch: list[Event]) -> Observable[Any]:
        result = pipeline(reactivex.from_iterable(batch))  # type: ignore[arg-type]
        if not isinstance(result, Observable):
            raise TypeError(
                f"pipeline returned {type(result).__name__}; expected an Observable "
                "(or make it an async function taking one event)"
            )
        return result

    async def handle_batch(batch: list[Event]) -> None:
        await _until_complete(_observable(batch))

    return handle_batch


async def run_worker(
    broker: str | Any,
    pipeline: Pipeline,
    group: str = "workers",
    pattern: str = ">",
    stop: asyncio.Event | None = None,
    consumer: str | None = None,
    *,
    key: str | Callable[[Event], Any] | None = None,
    partitions: int | None = None,
    to: str | None = None,
    checkpoint_every: int = 1000,
    checkpoint_seconds: float = 1.0,
    lease: float = 5.0,
) -> None:
    """Run one member of ``group`` until ``stop`` is set (or the pipeline fails).

    ``broker`` is a ``nats://`` or ``redis://`` URL, or a broker instance. With ``key``
    and ``partitions`` the group is a keyed worker group (see
    :func:`.stateful_worker.run_keyed_worker`): ``pipeline`` must then be an
    ``Observable`` function, built once per partition.

    >>> async def work():  # doctest: +SKIP
    ...     async def handle(event):
    ...         print(event.id, event.data)
    ...     await run_worker("redis://127.0.0.1:6379/0", handle, group="printers")
    """
    own = isinstance(broker, str)
    instance = from_url(broker) if isinstance(broker, str) else broker
    if isinstance(instance, MemoryBroker) or not hasattr(instance, "consume"):
        raise BrokerURLError(
            "workers need a shared broker with consumer groups: use --broker nats://... "
            "or --broker redis://..."
        )
    keyed = key is not None or partitions is not None
    if keyed and (key is None or not partitions or inspect.iscoroutinefunction(pipeline)):
        raise ValueError(
            "a keyed worker needs both --key and --partitions, and an Observable pipeline"
        )
    try:
        if keyed:
            from .stateful_worker import run_keyed_worker

            await run_keyed_worker(
                instance,
                pipeline,  # type: ignore[arg-type]
                group,
                pattern,
                key,  # type: ignore[arg-type]
                partitions,  # type: ignore[arg-type]
                to,
                checkpoint_every,
                checkpoint_seconds,
                lease,
                stop,
                consumer,
            )
        else:
            await instance.consume(group, pattern, as_batch_handler(pipeline), consumer, stop)
    finally:
        if own:
            await instance.close()


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m adapters.brokers.worker`` (same as ``rxstreams worker``)."""
    p = argparse.ArgumentParser(prog="rxstreams worker", description=__doc__.split("\n")[0])
    p.add_argument("target", help="MODULE:PIPELINE to run for each event")
    p.add_argument("--broker", required=True, help="nats://host:port or redis://host:port/db")
    p.add_argument("--group", default="workers", help="consumer group name (default: workers)")
    p.add_argument("--pattern", default=">", help="subject pattern to consume (default: >)")
    add_keyed_arguments(p)
    return p


def add_keyed_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a keyed (stateful, partitioned) worker group."""
    p.add_argument("--key", help="partition key: data.<path>, subject[i], subject or type")
    p.add_argument("--partitions", type=int, help="number of partitions (keyed worker group)")
    p.add_argument("--to", help="subject for outputs that are not events with a subject")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        help="checkpoint every N events (and at least every second; default: 1000)",
    )
    p.add_argument(
        "--lease", type=float, default=5.0, help="partition lease in seconds (default: 5)"
    )


def main(args: argparse.Namespace) -> int:
    """Run a worker from parsed arguments (``target``, ``broker``, ``group``, ``pattern``,
    and for a keyed group ``key``, ``partitions``, ``to``, ``checkpoint_every``, ``lease``);
    SIGINT/SIGTERM stop it after the batch in hand (a keyed member checkpoints and releases
    its partitions first). Returns the exit status."""
    pipeline = load_pipeline(args.target)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await run_worker(
            args.broker,
            pipeline,
            args.group or "workers",
            args.pattern or ">",
            stop,
            key=getattr(args, "key", None),
            partitions=getattr(args, "partitions", None),
            to=getattr(args, "to", None),
            checkpoint_every=getattr(args, "checkpoint_every", None) or 1000,
            lease=getattr(args, "lease", None) or 5.0,
        )

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(parser().parse_args()))

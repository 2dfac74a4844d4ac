"""Pipelines the worker tests run (imported by worker processes as MODULE:PIPELINE).

Each records the id of every event it finished, one line per event, in
``$RX_RECORD_DIR/worker-<pid>.log`` (``os.write`` on an ``O_APPEND`` file: lines stay whole
even when the process is killed).
"""

from __future__ import annotations

import os
import time
from typing import Any

from reactivex import Observable
from reactivex import operators as ops

from streams import Event

_fd: int | None = None


def _write(event: Event) -> None:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["RX_RECORD_DIR"], f"worker-{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, f"{event.id}\n".encode())
    delay = float(os.environ.get("RX_DELAY", "0"))
    if delay:
        time.sleep(delay)  # simulated work, so a kill lands mid-run


def record(events: Observable[Event]) -> Observable[Any]:
    """An Observable pipeline: record each event."""
    return events.pipe(ops.do_action(_write))


async def arecord(event: Event) -> None:
    """A per-event async pipeline: record the event."""
    _write(event)


def read_records(directory: str) -> list[str]:
    """Every recorded event id, across workers (duplicates kept)."""
    ids: list[str] = []
    for name in os.listdir(directory):
        if name.endswith(".log"):
            with open(os.path.join(directory, name)) as f:
                ids.extend(line.strip() for line in f if line.endswith("\n"))
    return ids

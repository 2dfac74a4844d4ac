"""Stateful stages: the ``snapshot()``/``restore()`` protocol and stable stage names.

A keyed worker group (``rxstreams worker --partitions N``) runs one long-lived pipeline per
partition and checkpoints it: the state of every stage implementing :class:`Stateful`, plus
the last input position, in one atomic write. A stage takes part by calling :func:`register`
when it is subscribed (that is when reactivex operators create their per-subscription
state); the runtime collects what registers while it subscribes the pipeline
(:func:`collecting`) and snapshots or restores each stage by its name.

Names are stable when the pipeline is built the same way in every process: an explicit name,
or ``"<kind>-<n>"`` numbered in subscription order.

>>> class Counter:
...     def __init__(self):
...         self.n = 0
...         self.name = register(self, kind="counter")
...     def snapshot(self):
...         return {"n": self.n}
...     def restore(self, state):
...         self.n = state["n"]
>>> with collecting() as stages:
...     a, b = Counter(), Counter()
>>> sorted(stages)
['counter-0', 'counter-1']
>>> isinstance(a, Stateful)
True
>>> Counter().name is None  # outside a collection nothing is recorded
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "StageNameError",
    "StageSetError",
    "Stateful",
    "collecting",
    "register",
    "restore_all",
    "snapshot_all",
]


@runtime_checkable
class Stateful(Protocol):
    """A stage whose state survives a restart.

    ``snapshot()`` returns ``bytes`` or a JSON-able ``dict`` (event time or wall-clock
    times only: a monotonic clock means nothing in another process); ``restore(state)``
    takes what ``snapshot()`` returned, before the stage sees any event.
    """

    def snapshot(self) -> bytes | dict[str, Any]: ...

    def restore(self, state: bytes | dict[str, Any]) -> None: ...


class StageNameError(ValueError):
    """Two stages of one pipeline registered under the same name."""


class StageSetError(ValueError):
    """A snapshot restored into a pipeline whose stateful stages are not the same set."""


_current: ContextVar[dict[str, Stateful] | None] = ContextVar("rx_stateful_stages", default=None)


def register(stage: Stateful, name: str | None = None, kind: str | None = None) -> str | None:
    """Record ``stage`` in the collection in progress under ``name`` (or ``"<kind>-<n>"``,
    ``kind`` defaulting to the class name in lower case); returns the name, or ``None`` when
    nothing is collecting (a pipeline run outside a keyed worker)."""
    stages = _current.get()
    if stages is None:
        return None
    if name is None:
        base = kind or type(stage).__name__.lower()
        n = sum(1 for k in stages if k.rpartition("-")[0] == base)
        name = f"{base}-{n}"
    if name in stages:
        raise StageNameError(f"two stateful stages are named {name!r}")
    stages[name] = stage
    return name


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, Stateful]]:
    """Collect the stages that :func:`register` while the block runs (name -> stage)."""
    stages: dict[str, Stateful] = {}
    token = _current.set(stages)
    try:
        yield stages
    finally:
        _current.reset(token)


def snapshot_all(stages: dict[str, Stateful]) -> dict[str, Any]:
    """Every stage's snapshot, by name."""
    return {name: stage.snapshot() for name, stage in stages.items()}


def restore_all(stages: dict[str, Stateful], state: dict[str, Any]) -> None:
    """Restore every stage by name; :class:`StageSetError` unless the snapshot holds exactly
    the stages of this pipeline (a stage added, removed or renamed since it was taken)."""
    missing, extra = sorted(set(stages) - set(state)), sorted(set(state) - set(stages))
    if missing or extra:
        raise StageSetError(
            f"the snapshot does not fit this pipeline: it has no state for {missing} "
            f"and has state for {extra}, which this pipeline lacks"
        )
    for name, stage in stages.items():
        stage.restore(state[name])

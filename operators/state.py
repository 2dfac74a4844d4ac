"""Stateful stages: the ``snapshot()``/``restore()`` protocol and stable stage names.

A keyed worker group (``rxstreams worker --partitions N``) runs one long-lived pipeline per
partition and checkpoints it: the state of every stage implementing :class:`Stateful`, plus
the last input position, in one atomic write. A stage takes part by calling :func:`register`
when it is subscribed (that is when reactivex operators create their per-subscription
state); the runtime collects what registers while it subscribes the pipeline
(:func:`collecting`) and snapshots or restores each stage by its name.

Names are stable when the pipeline is built the same way in every process: an explicit name,
or ``"<kind>-<n>"`` numbered in subscription order.

**Nested stages.** A stage that subscribes user pipelines while events flow
(``group_by_key``: each group's ``group.pipe(...)`` is subscribed when the group opens) keeps
the collection it was built in (:func:`current`) and registers what those pipelines hold
:func:`inside` it, under ``<owner>[<part>]/<name>``: ``group_by_key-0["ada"]/rate_limit-0``
is the first ``rate_limit`` of user ``ada``'s group. It drops them (:func:`forget`) when the
group ends. :func:`restore_all` restores the owner first (which reopens its groups, so their
pipelines subscribe and register again), then what registered meanwhile, before any event.

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
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from streams.errors import InvalidInput

__all__ = [
    "Collection",
    "StageNameError",
    "StageSetError",
    "Stateful",
    "collecting",
    "current",
    "forget",
    "inside",
    "part_label",
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


class StageNameError(InvalidInput):
    """Two stages of one pipeline registered under the same name."""


class StageSetError(InvalidInput):
    """A snapshot restored into a pipeline whose stateful stages are not the same set."""


@dataclass(slots=True)
class _Scope:
    """What was registered under one prefix: its names, the next number per base name, and
    the scopes opened inside it. Kept so that registering and forgetting cost time in
    proportion to one group, not to every stage collected (a worker may hold 100k keys)."""

    names: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    children: dict[str, None] = field(default_factory=dict)  # an ordered set


@dataclass(frozen=True, slots=True)
class Collection:
    """The stages of one pipeline being collected (name -> stage), and the prefix the names
    registered now get (``""`` at the top, ``"<owner>[<part>]/"`` inside a nested stage).
    ``scopes`` (prefix -> :class:`_Scope`) is shared by every collection of one pipeline."""

    stages: dict[str, Stateful]
    prefix: str = ""
    scopes: dict[str, _Scope] = field(default_factory=dict)

    def scope(self) -> _Scope:
        s = self.scopes.get(self.prefix)
        if s is None:
            s = self.scopes[self.prefix] = _Scope()
        return s


_current: ContextVar[Collection | None] = ContextVar("rx_stateful_stages", default=None)


def register(stage: Stateful, name: str | None = None, kind: str | None = None) -> str | None:
    """Record ``stage`` in the collection in progress under ``name`` (or ``"<kind>-<n>"``,
    ``kind`` defaulting to the class name in lower case), prefixed inside a nested stage;
    returns the full name, or ``None`` when nothing is collecting (a pipeline run outside a
    keyed worker)."""
    into = _current.get()
    if into is None:
        return None
    stages, scope = into.stages, into.scope()
    if name is None:
        base = into.prefix + (kind or type(stage).__name__.lower())
        n = scope.counts.get(base, 0)  # the stages of this kind registered in this scope
        name = f"{base}-{n}"
    else:
        name = into.prefix + name
    if name in stages:
        raise StageNameError(f"two stateful stages are named {name!r}")
    stages[name] = stage
    counted = name.rpartition("-")[0]  # as "<kind>-<n>" numbers it, named or not
    scope.counts[counted] = scope.counts.get(counted, 0) + 1
    scope.names.append(name)
    return name


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, Stateful]]:
    """Collect the stages that :func:`register` while the block runs (name -> stage)."""
    stages: dict[str, Stateful] = {}
    token = _current.set(Collection(stages))
    try:
        yield stages
    finally:
        _current.reset(token)


def current() -> Collection | None:
    """The collection in progress (``None`` outside one): what a nested stage keeps when it
    is built, to register its inner pipelines' stages later, when events open them."""
    return _current.get()


def part_label(part: object) -> str:
    """A stable text for a part of a nested stage (a group's key): compact JSON, tuples as
    lists, anything else by ``repr``.

    >>> part_label(("r1", "ada")), part_label(7)
    ('["r1","ada"]', '7')
    """
    return json.dumps(part, separators=(",", ":"), ensure_ascii=False, default=repr)


def _prefix(owner: str, part: str) -> str:
    return f"{owner}[{part}]/"


@contextlib.contextmanager
def inside(into: Collection | None, owner: str | None, part: str) -> Iterator[None]:
    """Stages registering in the block go into ``into`` as ``"<owner>[<part>]/<name>"``;
    nowhere when ``into`` or ``owner`` is ``None`` (the owner is not collected: its inner
    stages must not pass for top-level ones)."""
    scoped = None
    if into is not None and owner is not None:
        scoped = Collection(into.stages, _prefix(owner, part), into.scopes)
        if scoped.prefix not in into.scopes:
            into.scope().children[scoped.prefix] = None
            scoped.scope()
    token = _current.set(scoped)
    try:
        yield
    finally:
        _current.reset(token)


def forget(into: Collection | None, owner: str | None, part: str) -> None:
    """Drop the stages registered :func:`inside` ``owner``'s ``part`` (it has ended)."""
    if into is None or owner is None:
        return
    prefix = _prefix(owner, part)
    parent = into.scopes.get(into.prefix)
    if parent is not None:
        parent.children.pop(prefix, None)
    _drop_scope(into, prefix)


def _drop_scope(into: Collection, prefix: str) -> None:
    scope = into.scopes.pop(prefix, None)
    if scope is None:
        return
    for name in scope.names:
        into.stages.pop(name, None)
    for child in scope.children:
        _drop_scope(into, child)


def _owner(name: str) -> str:
    """The top-level stage a nested name belongs to (the name itself when not nested)."""
    head, sep, _ = name.partition("[")
    return head if sep and "]/" in name else name


def snapshot_all(stages: dict[str, Stateful]) -> dict[str, Any]:
    """Every stage's snapshot, by name."""
    return {name: stage.snapshot() for name, stage in stages.items()}


def restore_all(stages: dict[str, Stateful], state: dict[str, Any]) -> None:
    """Restore every stage by name; :class:`StageSetError` unless the snapshot holds exactly
    the stages of this pipeline (a stage added, removed or renamed since it was taken).

    Nested stages (see the module docstring) are not there yet when this starts: restoring
    their owner registers them, and they are restored in turn, before any event."""
    top = {n for n in stages if _owner(n) == n}
    nested = {n for n in state if _owner(n) != n and _owner(n) in top}
    missing, extra = sorted(top - set(state)), sorted(set(state) - top - nested)
    if missing or extra:
        raise StageSetError(
            f"the snapshot does not fit this pipeline: it has no state for {missing} "
            f"and has state for {extra}, which this pipeline lacks"
        )
    done: set[str] = set()
    while pending := [n for n in stages if n not in done]:
        for name in pending:
            if name not in stages:  # in a group that its owner's restore ended
                continue
            if name not in state:
                raise StageSetError(f"the snapshot has no state for the nested stage {name!r}")
            stages[name].restore(state[name])
            done.add(name)
    if left := sorted(set(state) - done):
        raise StageSetError(f"the snapshot has state for {left}, which this pipeline lacks")

"""Snapshot and restore for stateful operators: the JSON codec for items and keys, and the
base class every stateful stage shares.

A stateful stage (windows, ``dedupe``, ``group_by_key``, ``batch``/``batch_by_key``,
``rate_limit``, ``throttle``/``debounce``/``sample``, the joins) registers with
:func:`operators.state.register` when its pipeline is subscribed, under ``name=`` or
``"<kind>-<n>"`` (``n`` counts that kind's stages in pipeline order). Outside a keyed
worker nothing collects, so registering costs nothing per event.

A snapshot is a JSON-able dict: ``{"kind", "config", ...state}``. ``restore`` refuses a
snapshot of another kind or configuration (:class:`SnapshotError`) rather than guess.

**Times.** Event times are stored as they are. Anything timed on the scheduler's clock
(monotonic, or virtual under test) is stored as a duration relative to the snapshot: a
timer due in 0.3 s is due 0.3 s after the restore; a dedupe key with 20 s to live has
20 s to live after it. The clock is paused while the pipeline is down.

**Items and keys** (buffered events, pending values, window contents, keys) are encoded by
one rule: a :class:`streams.Event` as its encoded JSON (``{"$event": "..."}``), JSON values
(``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list``, ``dict``) as themselves,
a ``tuple`` as ``{"$tuple": [...]}`` (so tuple keys come back hashable), a dict with other
than ``str`` keys as ``{"$dict": [[k, v], ...]}``. Anything else (a custom object, a
NamedTuple, a set, bytes) is refused at snapshot time with :class:`SnapshotError` naming
the stage, so a checkpoint never holds what cannot be restored.

>>> from streams import Event
>>> e = Event.create({"n": 1}, subject="a.b")
>>> state = encode([e, ("room", 1), {"x": [1.5, None]}, {1: "a"}])
>>> decode(state) == [e, ("room", 1), {"x": [1.5, None]}, {1: "a"}]
True
>>> encode({1, 2})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
operators._snapshot.SnapshotError: cannot snapshot a set: items and keys must be ...
"""

from __future__ import annotations

import math
from typing import Any

from streams.errors import InvalidInput

from ._core import Stage

__all__ = ["SnapshotError", "SnapshotStage", "decode", "encode", "rel", "unrel"]


class SnapshotError(InvalidInput):
    """State that cannot be snapshotted, or a snapshot that does not fit this stage."""


_SCALARS = (str, int, bool, type(None))


def encode(x: Any) -> Any:
    """``x`` as a JSON value, by the rule in the module docstring; raises SnapshotError."""
    if isinstance(x, _SCALARS):
        return x
    t = type(x)
    if t is float:
        if not math.isfinite(x):
            raise SnapshotError(f"cannot snapshot the non-finite float {x!r}")
        return x
    if t is list:
        return [encode(v) for v in x]
    if t is tuple:
        return {"$tuple": [encode(v) for v in x]}
    if t is dict:
        if all(type(k) is str for k in x) and not (len(x) == 1 and next(iter(x))[:1] == "$"):
            return {k: encode(v) for k, v in x.items()}
        return {"$dict": [[encode(k), encode(v)] for k, v in x.items()]}
    from streams import Event

    if isinstance(x, Event):
        return {"$event": x.encode().decode()}
    raise SnapshotError(
        f"cannot snapshot a {t.__name__}: items and keys must be streams.Event, JSON values "
        "(dict, list, str, int, float, bool, None) or tuples of them"
    )


def decode(j: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(j, list):
        return [decode(v) for v in j]
    if not isinstance(j, dict):
        return j
    if len(j) == 1:
        tag, v = next(iter(j.items()))
        if tag == "$event":
            from streams import Event

            return Event.decode(v)
        if tag == "$tuple":
            return tuple(decode(x) for x in v)
        if tag == "$dict":
            return {decode(k): decode(val) for k, val in v}
    return {k: decode(v) for k, v in j.items()}


def rel(t: float, now: float) -> float | None:
    """A clock instant as seconds from ``now`` (``None`` for an infinite one)."""
    return t - now if math.isfinite(t) else None


def unrel(d: float | None, now: float, missing: float = -math.inf) -> float:
    """The inverse of :func:`rel` on this process's clock."""
    return missing if d is None else now + d


def finite(t: float) -> float | None:
    """An event time for JSON: ``None`` stands for an infinite one."""
    return t if math.isfinite(t) else None


class SnapshotStage(Stage):
    """A stage with ``snapshot()``/``restore()``; subclasses set ``stage_kind``, and give
    ``config()`` (what must match between the snapshot and the restoring stage), ``state()``
    and ``load(state)``. ``stage_name`` is the operator's ``name=``."""

    stage_kind = "stage"
    stage_name: str | None = None
    registered_as: str | None = None

    def config(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def load(self, state: dict[str, Any]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        try:
            body = self.state()
        except SnapshotError as exc:
            raise SnapshotError(f"stage {self.registered_as or self.stage_kind!r}: {exc}") from None
        return {"kind": self.stage_kind, "config": self.config(), **body}

    def restore(self, state: bytes | dict[str, Any]) -> None:
        where = f"stage {self.registered_as or self.stage_kind!r}"
        if not isinstance(state, dict):
            raise SnapshotError(f"{where}: a snapshot is a dict, got {type(state).__name__}")
        kind = state.get("kind")
        if kind != self.stage_kind:
            raise SnapshotError(f"{where} is a {self.stage_kind}; the snapshot is of a {kind}")
        mine = _plain(self.config())
        if state.get("config") != mine:
            raise SnapshotError(
                f"{where} was built with {mine}; the snapshot was taken with {state.get('config')}"
            )
        self.load(state)


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """The config as it reads back from JSON (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}

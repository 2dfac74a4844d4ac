"""Filtering by subject pattern, by field values, and bounded de-duplication.

``by_subject`` and ``field_match`` are pure filters and fuse with ``where``/``select``.
``dedupe`` keeps at most ``max_keys`` keys, each for ``ttl`` seconds, so its memory is
bounded, unlike ``reactivex.operators.distinct``. Operators assume one loop or thread.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from reactivex import Observable, abc

from ._core import Chain, PureSpec, Spec, Stage, clock, default_scheduler, lean
from ._snapshot import SnapshotStage, decode, encode
from .policy import OnError, check_policy, make_handler

__all__ = ["by_subject", "dedupe", "field_match"]

T = TypeVar("T")
_MISSING = object()


def by_subject(pattern: str) -> Callable[[Observable[T]], Observable[T]]:
    """Keep events whose ``subject`` matches a NATS-style pattern (``*`` one token, ``>`` rest).

    Raises :class:`streams.SubjectError` at once for a malformed pattern.

    >>> import reactivex
    >>> from streams import Event
    >>> evs = [Event.create(i, subject=s) for i, s in enumerate(["a.x", "b.x", "a.y.z"])]
    >>> reactivex.from_iterable(evs).pipe(by_subject("a.>")).subscribe(
    ...     lambda e: print(e.subject))  # doctest: +ELLIPSIS
    a.x
    a.y.z
    <...>
    """
    from streams import match, validate_pattern

    validate_pattern(pattern)

    def matches(event: Any) -> bool:
        subject = getattr(event, "subject", None)
        return subject is not None and match(pattern, subject)

    return lean(PureSpec("filter", matches, "fail"))


def _lookup(item: Any, path: list[str]) -> Any:
    for i, part in enumerate(path):
        if i == 0 and not isinstance(item, dict):
            if hasattr(item, part):
                item = getattr(item, part)
                continue
            data = getattr(item, "data", _MISSING)
            if isinstance(data, dict):
                item = data
        if not isinstance(item, dict):
            return _MISSING
        item = item.get(part, _MISSING)
        if item is _MISSING:
            return _MISSING
    return item


def field_match(
    fields: dict[str, Any] | None = None, **equal: Any
) -> Callable[[Observable[T]], Observable[T]]:
    """Keep events whose fields equal the given values; dotted paths reach into dicts.

    On an :class:`streams.Event`, a name is an attribute (``type``, ``subject``) or else a
    key of ``data``. A missing field never matches.

    >>> import reactivex
    >>> rows = [{"room": "a", "u": {"id": 1}}, {"room": "b", "u": {"id": 1}}]
    >>> reactivex.from_iterable(rows).pipe(field_match({"u.id": 1}, room="b")).subscribe(
    ...     print)  # doctest: +ELLIPSIS
    {'room': 'b', 'u': {'id': 1}}
    <...>
    """
    wanted = [(name.split("."), value) for name, value in {**(fields or {}), **equal}.items()]
    if not wanted:
        raise ValueError("field_match needs at least one field")

    def matches(item: Any) -> bool:
        return all(_lookup(item, path) == value for path, value in wanted)

    return lean(PureSpec("filter", matches, "fail"))


class _Dedupe(SnapshotStage):
    stage_kind = "dedupe"

    def __init__(self, down: Any, chain: Chain, spec: _DedupeSpec) -> None:
        super().__init__(down, chain)
        self.spec = spec
        self.stage_name = spec.stage_name
        self.seen: OrderedDict[Any, float] = OrderedDict()
        self.now = clock(default_scheduler(spec.scheduler, chain.scheduler))
        self.handler = make_handler(spec.on_error, self.fail)

    def on_next(self, value: Any) -> None:
        try:
            k = self.spec.key(value)
            hash(k)  # an unhashable key is the key function's error, under the policy
        except Exception as exc:
            self.handler(value, exc)
            return
        now = self.now()
        seen = self.seen
        while seen:  # expire the oldest first: insertion order is expiry order
            oldest, expiry = next(iter(seen.items()))
            if expiry > now:
                break
            del seen[oldest]
        if k in seen:
            if self.spec.on_drop is not None:
                try:
                    self.spec.on_drop(value)
                except Exception as exc:
                    self.handler(value, exc)
            return
        seen[k] = now + self.spec.ttl
        if len(seen) > self.spec.max_keys:
            seen.popitem(last=False)
        self.down.on_next(value)

    # -- snapshot: the keys still remembered, oldest first, with their time left to live --
    def config(self) -> dict[str, Any]:
        return {"ttl": self.spec.ttl, "max_keys": self.spec.max_keys}

    def state(self) -> dict[str, Any]:
        """Two columns, keys and times left (a keyed worker checkpoints this often, and it
        holds every key within the TTL: column-wise it costs a few C-speed passes)."""
        now = self.now()
        left = [t - now for t in self.seen.values()]
        gone = bisect.bisect_right(left, 0.0)  # expiry order: the expired ones come first
        keys = list(self.seen)[gone:]
        if not all(type(k) is str for k in keys):
            keys = [encode(k) for k in keys]
        return {"keys": keys, "left": left[gone:]}

    def load(self, state: dict[str, Any]) -> None:
        now = self.now()
        if "seen" in state:  # the row-wise form of earlier checkpoints
            self.seen = OrderedDict((decode(k), now + left) for k, left in state["seen"])
            return
        keys = [decode(k) for k in state["keys"]]
        self.seen = OrderedDict(zip(keys, [now + left for left in state["left"]], strict=True))


class _DedupeSpec(Spec):
    name = "dedupe"

    def __init__(
        self,
        key: Callable[[Any], Hashable],
        ttl: float,
        max_keys: int,
        scheduler: abc.SchedulerBase | None,
        on_error: OnError,
        on_drop: Callable[[Any], Any] | None = None,
        stage_name: str | None = None,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.key, self.ttl, self.max_keys, self.scheduler = key, ttl, max_keys, scheduler
        self.on_error = check_policy(on_error)
        self.on_drop = on_drop
        self.stage_name = stage_name

    def build(self, down: Any, chain: Chain) -> Stage:
        return _Dedupe(down, chain, self)


def _identity(x: Any) -> Any:
    return x


def dedupe(
    key: Callable[[T], Hashable] = _identity,
    ttl: float = 60.0,
    max_keys: int = 100_000,
    *,
    scheduler: abc.SchedulerBase | None = None,
    on_error: OnError = "fail",
    on_drop: Callable[[T], Any] | None = None,
    name: str | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Drop an event whose key was seen in the last ``ttl`` seconds.

    At most ``max_keys`` keys are remembered (the oldest is forgotten first), so memory
    stays bounded. A repeat is suppressed within the TTL; after it, it passes again. The
    TTL counts from the first occurrence (a repeat does not extend it). No timers.
    ``on_drop(event)`` hears about each suppressed repeat (its errors follow ``on_error``).

    Snapshot (``name``, default ``"dedupe-<n>"``): the keys remembered, oldest first, each
    with its time left to live.

    >>> import reactivex
    >>> reactivex.of("a", "b", "a", "c", "b").pipe(dedupe()).subscribe(print)
    ... # doctest: +ELLIPSIS
    a
    b
    c
    <...>
    """
    return lean(_DedupeSpec(key, ttl, max_keys, scheduler, on_error, on_drop, name))

"""Operator fusion: the machinery that keeps rxstreams operators lean.

Stock reactivex subscribes hop by hop and wraps every hop in an ``AutoDetachObserver``, so
each operator costs two or three Python calls per event. Here every rxstreams operator is a
*stage spec*. Applying one to a :class:`Lean` observable does not subscribe anything: it
returns a new :class:`Lean` holding the same root source and one more spec. At subscribe
time the chain is built once: runs of pure stages (filter, map) are compiled into a single
generated function, a stage that can be inlined (count batching) is appended to that
function, and the root is subscribed with a bare observer whose ``on_next`` *is* the first
fused function. So ``filter -> map -> batch(count=...)`` costs one call per event.

Semantics follow reactivex exactly: an exception in user code goes through the operator's
error policy; errors and completion travel down the chain stage by stage; after a terminal
notification the chain is stopped, timers are cancelled and the root is unsubscribed.
Operators assume one loop or thread (no locks on the hot path).
"""

from __future__ import annotations

import asyncio
import hashlib
import linecache
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.scheduler import TimeoutScheduler
from reactivex.scheduler.eventloop import AsyncIOScheduler
from reactivex.scheduler.virtualtimescheduler import VirtualTimeScheduler

from .policy import OnError, check_policy, make_handler
from .state import register

__all__ = ["TICK", "Chain", "Lean", "PureSpec", "Spec", "Stage", "default_scheduler", "lean"]

TICK = 1e-6
"""How close to its deadline a timer counts as due. reactivex's virtual clock keeps time as
a ``datetime`` (whole microseconds), so a timer fires up to half a microsecond before a
float deadline; re-arming for that remainder would schedule it at "now", which spins
``advance_to`` forever and makes ``start()`` jump a whole second. Every re-arming timer
treats a remainder of at most ``TICK`` as due."""


def _noop(*_: Any) -> None:
    return None


def default_scheduler(
    given: abc.SchedulerBase | None, at_subscribe: abc.SchedulerBase | None
) -> abc.SchedulerBase:
    """The operator's scheduler, else the subscribe-time one, else the running loop's,
    else reactivex's ``TimeoutScheduler`` (its timers fire on another thread: feed such
    a pipeline from one thread only if no timers are involved)."""
    if given is not None:
        return given
    if at_subscribe is not None:
        return at_subscribe
    try:
        return AsyncIOScheduler(asyncio.get_running_loop())
    except RuntimeError:
        return TimeoutScheduler.singleton()


def clock(scheduler: abc.SchedulerBase) -> Callable[[], float]:
    """Seconds on the scheduler's clock: virtual time under test, monotonic otherwise."""
    if isinstance(scheduler, VirtualTimeScheduler):
        vts = scheduler
        return lambda: float(vts.clock)
    if isinstance(scheduler, AsyncIOScheduler):
        return scheduler._loop.time
    return time.monotonic


class Chain:
    """The shared state of one subscription to a fused chain."""

    __slots__ = ("root", "scheduler", "stages", "stopped", "upstream")

    def __init__(self, scheduler: abc.SchedulerBase | None) -> None:
        self.scheduler = scheduler
        self.stopped = False
        self.stages: list[Stage] = []
        self.upstream: abc.DisposableBase | None = None
        self.root: _Root | None = None

    def release(self) -> None:
        """The outer subscription is disposed. Stop, unless a stage still serves subscribers
        of its own (``group_by_key``'s groups, as in every Rx): then only the stages after
        it stop, and that stage stops the chain once its last subscriber has gone."""
        if self.stopped:
            return
        for i, stage in enumerate(self.stages):  # stages[0] is the last operator
            if stage.serving():
                for later in self.stages[:i]:
                    later.dispose()
                stage.detach()
                return
        self.stop()

    def stop(self) -> None:
        """Stop delivering, cancel every timer, unsubscribe the root (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        root = self.root
        if root is not None:
            root.is_stopped = True
            root.on_next = _noop  # type: ignore[method-assign,assignment]
        for stage in self.stages:
            stage.dispose()
        if self.upstream is not None:
            self.upstream.dispose()


class Stage:
    """One operator inside a subscribed chain. Subclasses override ``on_next`` and, when
    they hold state, ``on_completed`` (flush) and ``dispose`` (cancel timers)."""

    down: Any
    chain: Chain

    def __init__(self, down: Any, chain: Chain) -> None:
        self.down = down
        self.chain = chain

    def on_next(self, value: Any) -> None:  # pragma: no cover - overridden
        self.down.on_next(value)

    def on_error(self, error: Exception) -> None:
        self.dispose()
        self.down.on_error(error)

    def on_completed(self) -> None:
        self.dispose()
        self.down.on_completed()

    def dispose(self) -> None:
        return None

    def serving(self) -> bool:
        """True while subscribers of this stage's own outputs need upstream to go on."""
        return False

    def detach(self) -> None:
        """The outer subscription is gone but :meth:`serving` said to go on."""
        return None

    def after(
        self, scheduler: abc.SchedulerBase, seconds: float, action: Callable[[], None]
    ) -> Any:
        """Run ``action`` after ``seconds`` unless the chain has stopped; returns a disposable."""
        chain = self.chain

        def fire(_: Any = None, __: Any = None) -> None:
            if not chain.stopped:
                action()

        return scheduler.schedule_relative(max(seconds, 0.0), fire)

    def fail(self, error: Exception) -> None:
        """End the stream from inside this stage (error policy ``fail``)."""
        self.on_error(error)

    def inline(self, prefix: str) -> tuple[list[str], dict[str, Any]] | None:
        """Optional: code lines consuming ``x`` to paste into a fused function."""
        return None


class _Terminal:
    """The downstream observer, with chain shutdown on a terminal notification."""

    __slots__ = ("chain", "observer", "on_next")

    def __init__(self, observer: abc.ObserverBase[Any], chain: Chain) -> None:
        self.observer = observer
        self.chain = chain
        self.on_next = observer.on_next

    def on_error(self, error: Exception) -> None:
        if self.chain.stopped:
            return
        self.chain.stop()
        self.observer.on_error(error)

    def on_completed(self) -> None:
        if self.chain.stopped:
            return
        self.chain.stop()
        self.observer.on_completed()


class _Root(abc.ObserverBase[Any]):
    """The bare observer handed to the root source; ``on_next`` is the fused function."""

    def __init__(self, first: Any, chain: Chain) -> None:
        self.first = first
        self.chain = chain
        self.is_stopped = False
        self.on_next = first.on_next  # type: ignore[method-assign]

    def on_next(self, value: Any) -> None:  # pragma: no cover - shadowed per instance
        self.first.on_next(value)

    def on_error(self, error: Exception) -> None:
        if self.is_stopped:
            return
        self.is_stopped = True
        self.first.on_error(error)

    def on_completed(self) -> None:
        if self.is_stopped:
            return
        self.is_stopped = True
        self.first.on_completed()


class Spec:
    """A description of one operator; ``build`` makes its :class:`Stage` per subscription."""

    name = "stage"

    def build(self, down: Any, chain: Chain) -> Any:
        raise NotImplementedError


class PureSpec(Spec):
    """A stateless filter or map; fused with its neighbours into one generated function."""

    def __init__(self, kind: str, fn: Callable[[Any], Any], on_error: OnError) -> None:
        self.kind = kind
        self.fn = fn
        self.on_error = check_policy(on_error)

    def code(self, i: int) -> list[str]:
        """The lines of this stage in the fused function; the line that calls the user's
        function names it, so a traceback through the fused code says which stage failed."""
        f, h = f"f{i}", f"h{i}"
        label = f"  # {self.kind}({_name_of(self.fn)})"
        if self.kind == "filter":
            return [
                "    try:",
                f"        if not {f}(x):{label}",
                "            return",
                "    except Exception as e:",
                f"        {h}(x, e)",
                "        return",
            ]
        return [
            "    try:",
            f"        y = {f}(x){label}",
            "    except Exception as e:",
            f"        {h}(x, e)",
            "        return",
            "    x = y",
        ]


def _name_of(fn: Callable[..., Any]) -> str:
    """A user function's name for a comment in generated code (one line, no surprises).

    >>> _name_of(len), _name_of(lambda x: x)
    ('len', '<lambda>')
    """
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return " ".join(str(name).split())


def _register_source(source: str) -> str:
    """A filename for generated ``source``, registered with :mod:`linecache` so that a
    traceback through the fused function shows its lines (attrs does the same for the
    methods it generates). The name comes from the source's hash: every subscription to a
    chain of one shape shares one entry, so the cache grows with the number of distinct
    chains, not with subscriptions. ``mtime`` ``None`` keeps ``linecache.checkcache`` from
    dropping the entry; after ``linecache.clearcache()`` the next compile registers it anew.

    >>> name = _register_source("def on_next(x):\\n    nxt(x)\\n")
    >>> name.startswith("<rxstreams fused "), linecache.getline(name, 2)
    (True, '    nxt(x)\\n')
    """
    digest = hashlib.blake2b(source.encode(), digest_size=8).hexdigest()
    filename = f"<rxstreams fused {digest}>"
    if filename not in linecache.cache:
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return filename


class _Compiled:
    """Pure stages (and optionally an inlined stage) fused into one ``on_next``."""

    __slots__ = ("down", "on_next")

    def __init__(self, specs: Sequence[PureSpec], down: Any) -> None:
        self.down = down
        ns: dict[str, Any] = {}
        lines = ["def on_next(x):"]
        for i, spec in enumerate(specs):
            ns[f"f{i}"] = spec.fn
            ns[f"h{i}"] = make_handler(spec.on_error, down.on_error)
            lines += spec.code(i)
        tail = down.inline("t_") if isinstance(down, Stage) else None
        if tail is None:
            ns["nxt"] = down.on_next
            lines.append("    nxt(x)")
        else:
            tail_lines, tail_ns = tail
            ns.update(tail_ns)
            lines += ["    " + line for line in tail_lines]
        source = "\n".join(lines) + "\n"
        exec(compile(source, _register_source(source), "exec"), ns)
        self.on_next = ns["on_next"]

    def on_error(self, error: Exception) -> None:
        self.down.on_error(error)

    def on_completed(self) -> None:
        self.down.on_completed()


def _fix(subscriber: Any) -> abc.DisposableBase:
    if subscriber is None:
        return Disposable()
    if hasattr(subscriber, "dispose"):
        return cast(abc.DisposableBase, subscriber)
    return Disposable(subscriber)


class Lean(Observable[Any]):
    """An observable made of a root source and fused rxstreams stages."""

    def __init__(self, root: Observable[Any], specs: Sequence[Spec]) -> None:
        super().__init__()
        self.root = root
        self.specs = tuple(specs)

    def _subscribe_core(
        self, observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        chain = Chain(scheduler)
        target: Any = _Terminal(observer, chain)
        pure: list[PureSpec] = []
        for spec in reversed(self.specs):
            if isinstance(spec, PureSpec):
                pure.append(spec)
                continue
            if pure or (isinstance(target, Stage) and target.inline("t_") is not None):
                target = _Compiled(pure[::-1], target)
                pure = []
            target = spec.build(target, chain)
            if isinstance(target, Stage):
                chain.stages.append(target)
        if pure or (isinstance(target, Stage) and target.inline("t_") is not None):
            target = _Compiled(pure[::-1], target)
        if chain.stopped:  # a stage's own input (a join's other side) has already failed
            return Disposable()
        root = _Root(target, chain)
        chain.root = root
        try:
            upstream = _fix(self.root._subscribe_core(root, scheduler))
        except Exception as exc:
            if chain.stopped:
                raise
            root.on_error(exc)
            return Disposable()
        _register(chain.stages)
        if chain.stopped:
            upstream.dispose()
        else:
            chain.upstream = upstream
        return Disposable(chain.release)


def _register(stages: list[Stage]) -> None:
    """Offer the stateful stages to a collection in progress (:mod:`operators.state`), in
    pipeline order: after the root, so a chain upstream (subscribed by the root) comes first."""
    for stage in reversed(stages):  # stages[0] is the last operator
        kind = getattr(stage, "stage_kind", None)
        if kind is not None:
            named: Any = stage
            named.registered_as = register(named, named.stage_name, kind)


def lean(spec: Spec) -> Callable[[Observable[Any]], Observable[Any]]:
    """Wrap a spec as a pipeable operator that fuses with neighbouring rxstreams operators."""

    def apply(source: Observable[Any]) -> Observable[Any]:
        if isinstance(source, Lean):
            return Lean(source.root, (*source.specs, spec))
        return Lean(source, (spec,))

    apply.spec = spec  # type: ignore[attr-defined]
    return apply

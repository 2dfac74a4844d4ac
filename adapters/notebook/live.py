"""A live view of any observable in a notebook cell: the latest events and the event rate.

The view subscribes to the observable and redraws one display output in place (an
``IPython.display`` handle) from the kernel's own asyncio loop: one timer, at most one
redraw per ``every`` seconds however fast events arrive, and only the last ``rows``
events are kept. Each redraw shows a small chart of the rate over the last ``history``
redraws, left-aligned columns, event times as ``HH:MM:SS.mmm`` and positions short (the
full one on hover). It ends with ``.stop()`` (or the *Stop* button under the view, when
``ipywidgets`` is installed: the ``jupyter`` extra), when the stream completes or fails,
or when a view with the same key is created (re-running the cell: the key is ``name`` or
else the cell's id), so a re-run never leaves an old subscription running.

>>> import asyncio, reactivex
>>> class Handle:  # anything with update(obj); in Jupyter, a display handle
...     def update(self, obj): self.html = obj._repr_html_()
>>> async def main():
...     view = live(reactivex.of(1, 2, 3), rows=2, handle=Handle())
...     await view.until(3)
...     return view.count, view.rows, view.status
>>> asyncio.run(main())
(3, [2, 3], 'completed')
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any, Protocol

from reactivex import Observable, abc

from streams import Event

__all__ = ["Html", "LiveView", "Watch", "live", "short_position", "sparkline", "stop_all"]
__all__ += ["views", "watch"]


class Handle(Protocol):
    """Where a view draws: ``IPython.display.DisplayHandle`` or any object like it."""

    def update(self, obj: Any) -> None: ...


class Html:
    """Rendered HTML that Jupyter shows as such (``_repr_html_``), with a text fallback."""

    def __init__(self, html: str, text: str) -> None:
        self.html = html
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


_views: dict[str, LiveView | Watch] = {}
_anonymous = itertools.count(1)


def views() -> dict[str, LiveView | Watch]:
    """The running views by key."""
    return dict(_views)


def stop_all() -> None:
    """Stop every running view."""
    for view in list(_views.values()):
        view.stop()


def _cell_id() -> str | None:
    """The id of the notebook cell being executed, when the front end sends one."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent()
    except Exception:
        return None
    cell = (parent or {}).get("metadata", {}).get("cellId")
    return str(cell) if cell else None


def _execution_count() -> int | None:
    """The running cell's execution count inside IPython, else ``None``."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else int(shell.execution_count)


def _show_once(obj: Any, shown_in: int | None) -> None:
    """Display ``obj`` unless it already displayed itself in the running cell (so a view
    that is a cell's last expression does not show twice)."""
    if shown_in is not None and shown_in == _execution_count():
        return
    from IPython.display import display

    display(obj.snapshot() if hasattr(obj, "snapshot") else obj.obj)  # type: ignore[no-untyped-call]


def short_position(position: str | None, digits: int = 6) -> str:
    """A position as people read it in a table: the offset, its last ``digits`` digits
    when longer (a Redis offset packs milliseconds), without the epoch.

    >>> short_position("c5037cf0-42"), short_position("9a1b2c3d-1839274625827348480")
    ('42', '…348480')
    >>> short_position(None)
    ''
    """
    if not position:
        return ""
    offset = position.rpartition("-")[2]
    return offset if len(offset) <= digits else "…" + offset[-digits:]


def _short_time(value: str | None) -> str:
    """``2026-11-30T13:33:42.195247Z`` -> ``13:33:42.195`` (anything else unchanged)."""
    if value and len(value) >= 23 and value[10] == "T":
        return value[11:23]
    return value or ""


class _Short(str):
    """A cell shown short with its full text on hover."""

    full: str

    def __new__(cls, short: str, full: str) -> _Short:
        obj = super().__new__(cls, short)
        obj.full = full
        return obj


def sparkline(values: Sequence[float], width: int = 160, height: int = 28) -> str:
    """A tiny SVG line chart of ``values`` (e.g. the rate per redraw), scaled to its max.

    >>> svg = sparkline([0, 5, 10])
    >>> svg.startswith('<svg class="rxstreams-rate"')
    True
    >>> 'points="0.0,27.0 80.0,14.0 160.0,1.0"' in svg
    True
    """
    top = max(values, default=0.0) or 1.0
    step = width / max(len(values) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg class="rxstreams-rate" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="vertical-align:middle">'
        f'<rect width="{width}" height="{height}" fill="#f6f8fb"/>'
        f'<polyline points="{points}" fill="none" stroke="#4e79a7" stroke-width="1.5"/>'
        f"<title>events/s, last {len(values)} redraws (max {top:,.1f}/s)</title></svg>"
    )


def _columns_of(item: Any) -> dict[str, Any]:
    if isinstance(item, Event):
        pos = item.sequence
        return {
            "time": _Short(_short_time(item.time), item.time or ""),
            "position": _Short(short_position(pos), pos or ""),
            "subject": item.subject,
            "type": item.type,
            "data": item.data,
        }
    if isinstance(item, Mapping):
        return dict(item)
    fields = getattr(item, "_fields", None)
    if isinstance(fields, tuple):
        return dict(zip(fields, item, strict=True))
    return {"value": item}


def _cell(value: Any, limit: int = 80) -> str:
    if isinstance(value, _Short):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else _Short(text[: limit - 1] + "…", text)


_LEFT = "text-align:left;vertical-align:top;white-space:nowrap;font-family:monospace"


def _td(cell: str, tag: str = "td") -> str:
    title = f' title="{escape(cell.full)}"' if isinstance(cell, _Short) else ""
    return f'<{tag} style="{_LEFT}"{title}>{escape(cell)}</{tag}>'


class LiveView:
    """The latest ``rows`` items of ``source`` and its rate, redrawn every ``every`` s.

    Use :func:`live` to create one. ``count``, ``rows``, ``rate`` and ``status``
    (``"running"``, ``"completed"``, ``"error: ..."``, ``"stopped"``) can be read at any
    time; ``await view.until(n)`` waits for ``n`` events or the end of the stream.
    """

    def __init__(
        self,
        source: Observable[Any],
        *,
        key: str,
        rows: int = 10,
        every: float = 0.5,
        columns: Sequence[str] | Mapping[str, Callable[[Any], Any]] | None = None,
        title: str | None = None,
        handle: Handle | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] | None = None,
        rate_window: float = 5.0,
        history: int = 60,
    ) -> None:
        if rows < 1:
            raise ValueError(f"rows must be at least 1, not {rows}")
        if not every > 0:
            raise ValueError(f"every must be a positive number of seconds, not {every}")
        loop = _running_loop(loop)
        self.key = key
        self.title = title or key
        self.every = every
        self.columns = columns
        self.loop = loop
        self._clock = clock or time.monotonic
        self._latest: collections.deque[Any] = collections.deque(maxlen=rows)
        self.count = 0
        self.redraws = 0
        self.status = "running"
        self._samples: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=max(2, math.ceil(rate_window / every) + 1)
        )
        self._samples.append((self._clock(), 0))
        self.rates: collections.deque[float] = collections.deque(maxlen=max(history, 2))
        self.button: Any = None  # the Stop button (ipywidgets), when shown
        self._drawn: tuple[int, float, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._subscription: abc.DisposableBase | None = None
        self._shown_in = _execution_count() if handle is None else None
        self._handle = handle if handle is not None else self._display()
        if handle is None:
            self.button = _stop_button(self)
        previous = _views.get(key)
        if previous is not None:
            previous.stop()
        _views[key] = self
        self._arm()
        self._subscription = source.subscribe(self._on_next, self._on_error, self._on_completed)
        if self.status != "running":  # a synchronous source already ended
            self._subscription.dispose()

    # -- events (may arrive on any thread; state is tiny and append-only) -----------------
    def _on_next(self, item: Any) -> None:
        if self.status != "running":
            return
        self._latest.append(item)
        self.count += 1
        if self._waiters:
            self._call(self._wake)

    def _on_error(self, error: Exception) -> None:
        self._end(f"error: {type(error).__name__}: {error}")

    def _on_completed(self) -> None:
        self._end("completed")

    def _call(self, fn: Callable[[], None]) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            fn()
        else:
            self.loop.call_soon_threadsafe(fn)

    def _end(self, status: str) -> None:
        if self.status != "running":
            return
        self.status = status
        self._call(self._finish)

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if _views.get(self.key) is self:
            del _views[self.key]
        self.redraw()
        self._finished_button()
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    def stop(self) -> None:
        """Unsubscribe and draw the final state (idempotent)."""
        if self._subscription is not None:
            self._subscription.dispose()
        if self.status == "running":
            self.status = "stopped"
            self._finish()

    def _finished_button(self) -> None:
        if self.button is not None:
            self.button.disabled = True
            self.button.description = self.status.split(":")[0]

    # -- drawing ----------------------------------------------------------------------------
    def _display(self) -> Handle:
        from IPython.display import display

        handle = display(self.snapshot(), display_id=True)  # type: ignore[no-untyped-call]
        if handle is None:  # pragma: no cover - display() always returns a handle here
            raise RuntimeError("IPython did not return a display handle")
        return handle  # type: ignore[no-any-return]

    def _arm(self) -> None:
        self._timer = self.loop.call_later(self.every, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.status != "running":
            return
        self._samples.append((self._clock(), self.count))
        self.rates.append(self.rate)
        self.redraw()
        self._arm()

    def _wake(self) -> None:
        keep = []
        for n, fut in self._waiters:
            if self.count >= n and not fut.done():
                fut.set_result(None)
            elif not fut.done():
                keep.append((n, fut))
        self._waiters = keep

    @property
    def rows(self) -> list[Any]:
        """The latest items, oldest first."""
        return list(self._latest)

    @property
    def rate(self) -> float:
        """Events per second over the last few redraw intervals."""
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def redraw(self, force: bool = False) -> None:
        """Draw the current state now (the timer calls this; unchanged ticks draw nothing)."""
        state = (self.count, round(self.rate, 1), self.status)
        if state == self._drawn and not force:
            return
        self._drawn = state
        self.redraws += 1
        self._handle.update(self.snapshot())

    def _table(self) -> tuple[list[str], list[list[str]]]:
        items = list(self._latest)
        if isinstance(self.columns, Mapping):
            getters = dict(self.columns)
            return list(getters), [[_cell(f(i)) for f in getters.values()] for i in items]
        dicts = [_columns_of(i) for i in items]
        names = list(self.columns) if self.columns is not None else []
        if self.columns is None:
            for d in dicts:
                names.extend(k for k in d if k not in names)
        return names, [[_cell(d.get(n, "")) for n in names] for d in dicts]

    def snapshot(self) -> Html:
        """The view as HTML (newest row first) and as text."""
        names, body = self._table()
        head = "".join(_td(n, "th") for n in names)
        trs = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in reversed(body))
        summary = f"{self.count} events · {self.rate:.1f}/s · {self.status}"
        running = self.status == "running" and self.button is None  # no Stop button
        hint = " · stop: view.stop() or re-run the cell" if running else ""
        chart = sparkline(list(self.rates)) if len(self.rates) >= 2 else ""
        html = (
            f'<div class="rxstreams-live" data-key="{escape(self.key)}" style="text-align:left">'
            f"<b>{escape(self.title)}</b> <span>{escape(summary)}</span> {chart}"
            f'<span style="color:#888">{escape(hint)}</span>'
            f'<table style="margin-left:0"><thead><tr>{head}</tr></thead>'
            f"<tbody>{trs}</tbody></table></div>"
        )
        text = f"{self.title}: {summary}\n" + "\n".join(" | ".join(r) for r in reversed(body))
        return Html(html, text)

    def _repr_html_(self) -> str:
        return self.snapshot().html

    def _ipython_display_(self) -> None:
        _show_once(self, self._shown_in)

    def __repr__(self) -> str:
        return f"<LiveView {self.key!r}: {self.count} events, {self.status}>"

    async def until(self, count: int, timeout: float | None = 30.0) -> LiveView:
        """Wait until ``count`` events arrived or the stream ended (``TimeoutError`` after
        ``timeout`` seconds)."""
        if self.count >= count or self.status != "running":
            return self
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append((count, fut))
        await asyncio.wait_for(fut, timeout)
        return self


def _stop_button(view: LiveView) -> Any:
    """A *Stop* button under the view (``ipywidgets``, from the ``jupyter`` extra), or
    ``None`` without it: then the view says how to stop it."""
    try:
        import ipywidgets
        from IPython.display import display
    except ImportError:
        return None
    button = ipywidgets.Button(description="Stop", icon="stop", tooltip=f"stop {view.key}")
    button.on_click(lambda _b: view.stop())
    display(button)  # type: ignore[no-untyped-call]
    return button


def _running_loop(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    if loop is not None:
        return loop
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "live views need a running asyncio loop: call them from a Jupyter cell "
            "(the kernel runs one) or from async code"
        ) from None


class Watch:
    """Redraws ``obj`` (anything Jupyter can show, e.g. a pipeline graph that renders its
    live counters) every ``every`` seconds until ``.stop()``. Create with :func:`watch`."""

    def __init__(
        self,
        obj: Any,
        *,
        key: str,
        every: float = 1.0,
        handle: Handle | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not every > 0:
            raise ValueError(f"every must be a positive number of seconds, not {every}")
        self.obj, self.key, self.every = obj, key, every
        self.loop = _running_loop(loop)
        self.redraws = 0
        self.status = "running"
        self._shown_in = _execution_count() if handle is None else None
        if handle is None:
            from IPython.display import display

            handle = display(obj, display_id=True)  # type: ignore[no-untyped-call]
        self._handle: Handle = handle
        previous = _views.get(key)
        if previous is not None:
            previous.stop()
        _views[key] = self
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(every, self._tick)

    def _tick(self) -> None:
        self.redraws += 1
        self._handle.update(self.obj)
        self._timer = self.loop.call_later(self.every, self._tick)

    def stop(self) -> None:
        """Stop redrawing, after one last redraw (idempotent)."""
        if self.status != "running":
            return
        self.status = "stopped"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if _views.get(self.key) is self:
            del _views[self.key]
        self.redraws += 1
        self._handle.update(self.obj)

    def __repr__(self) -> str:
        return f"<Watch {self.key!r}: {self.redraws} redraws, {self.status}>"

    def _ipython_display_(self) -> None:
        _show_once(self, self._shown_in)


def watch(
    obj: Any,
    name: str | None = None,
    *,
    every: float = 1.0,
    handle: Handle | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Watch:
    """Show ``obj`` and redraw it in place every ``every`` seconds (same re-run rule as
    :func:`live`), e.g. ``watch(pipeline_graph(), "graph")``.

    >>> w = watch(pipeline_graph(), "graph", every=1)  # doctest: +SKIP
    >>> w.stop()  # doctest: +SKIP
    """
    key = name or _cell_id() or f"watch-{next(_anonymous)}"
    return Watch(obj, key=key, every=every, handle=handle, loop=loop)


def live(
    source: Observable[Any],
    name: str | None = None,
    *,
    rows: int = 10,
    every: float = 0.5,
    columns: Sequence[str] | Mapping[str, Callable[[Any], Any]] | None = None,
    handle: Handle | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> LiveView:
    """Show ``source`` live in the current cell: its latest ``rows`` items and its rate.

    Re-running the cell (or creating another view with the same ``name``) stops the
    previous view. ``columns`` picks columns by name or maps names to functions of the
    item; events show time, subject, type and data. ``handle`` replaces the display
    (anything with ``update(obj)``).

    >>> view = live(synthetic("chat", rate=20), "chat", rows=5)  # doctest: +SKIP
    >>> view.stop()  # doctest: +SKIP
    """
    key = name or _cell_id() or f"live-{next(_anonymous)}"
    return LiveView(
        source, key=key, rows=rows, every=every, columns=columns, title=name, handle=handle,
        loop=loop,
    )  # fmt: skip

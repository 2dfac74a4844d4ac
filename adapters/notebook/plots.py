"""Plots of windowed aggregates (``tumbling``/``sliding``/``session`` results) with matplotlib.

Figures are made with the object-oriented API on the Agg canvas (no pyplot, no global
figure state, no GUI backend), and shown inline in Jupyter as PNG. matplotlib is imported
only when a plot is drawn.

>>> from operators import Window
>>> fig = plot_windows([Window("a", 0, 10, 3), Window("b", 0, 10, 1), Window("a", 10, 20, 5)])
>>> [(line.get_label(), line.get_ydata().tolist()) for line in fig.axes[0].lines]
[('a', [3, 5]), ('b', [1])]
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from operators import Window

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_windows", "window_series"]


def window_series(
    windows: Iterable[Any], value: Callable[[Any], float] | None = None
) -> dict[Any, tuple[list[float], list[float], list[float]]]:
    """Group windows by key: ``{key: (starts, ends, values)}`` in arrival order; anything
    that is not a :class:`operators.Window` (late events) is left out.

    >>> window_series([Window(None, 0, 5, 2), Window(None, 5, 10, 4)])
    {None: ([0, 5], [5, 10], [2, 4])}
    """
    series: dict[Any, tuple[list[float], list[float], list[float]]] = {}
    for w in windows:
        if not isinstance(w, Window):
            continue
        starts, ends, values = series.setdefault(w.key, ([], [], []))
        starts.append(w.start)
        ends.append(w.end)
        values.append(value(w.value) if value is not None else w.value)
    return series


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _show_inline() -> None:
    """Let IPython show bare ``Figure`` objects as PNG (pyplot's inline backend only
    handles the figures pyplot created)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is in the notebook extra
        return
    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure

    png = shell.display_formatter.formatters["image/png"]
    try:
        png.lookup_by_type(Figure)
    except KeyError:
        png.for_type(Figure, _png)


def plot_windows(
    windows: Iterable[Any],
    *,
    kind: str = "line",
    value: Callable[[Any], float] | None = None,
    title: str | None = None,
    ylabel: str = "value",
    ax: Axes | None = None,
) -> Figure:
    """Plot window values over time, one series per key: ``kind="line"`` (a point at each
    window's end) or ``"bar"`` (a bar spanning each window). ``value`` maps a window's
    value to a number (e.g. ``len`` for lists). Returns the figure.

    >>> fig = plot_windows([Window(None, 0, 10, 4)], kind="bar", title="per 10 s")
    >>> [float(p.get_height()) for p in fig.axes[0].patches], fig.axes[0].get_title()
    ([4.0], 'per 10 s')
    """
    if kind not in ("line", "bar"):
        raise ValueError(f"kind must be 'line' or 'bar', not {kind!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(7, 3.2), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()  # type: ignore[assignment]
    series = window_series(windows, value)
    with contextlib.suppress(TypeError):  # keys that do not compare keep arrival order
        series = dict(sorted(series.items()))
    keyed = len(series) > 1 or None not in series
    for i, (key, (starts, ends, values)) in enumerate(series.items()):
        label = str(key) if keyed else "windows"
        if kind == "bar":
            n = len(series)
            widths = [(e - s) / n * 0.9 for s, e in zip(starts, ends, strict=True)]
            lefts = [s + w * i / 0.9 for s, w in zip(starts, widths, strict=True)]
            ax.bar(lefts, values, width=widths, align="edge", label=label)
        else:
            ax.plot(ends, values, marker="o", label=label)
    ax.set_xlabel("window end" if kind == "line" else "time")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if keyed:
        ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)
    _show_inline()
    return fig

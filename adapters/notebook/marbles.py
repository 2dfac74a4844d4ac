"""Marble diagrams: what a pipeline does to a sample input, on virtual time, as SVG.

The input is replayed on a :class:`reactivex.testing.TestScheduler`, so time-based
operators (``batch(within=...)``, windows, ``throttle``) behave exactly as they would live,
without waiting. The pipeline may return one observable (one output lane), a mapping of
named observables or :class:`operators.Branches` (one lane per branch); a join takes a
second input lane (``other=``). Lists are drawn as
grouped marbles (batches), :class:`operators.Window` results as a box with the window's
span below the lane, completion as a bar and an error as a cross. The SVG depends only on
the input, so it diffs cleanly and can be tested.

>>> from operators import where
>>> m = marble(lambda src: src.pipe(where(lambda x: x % 2)), [(1, 1), (2, 2), (3, 3)])
>>> [(mk.t, mk.value) for mk in m.lanes["output"] if mk.kind == "next"]
[(1.0, 1), (3.0, 3)]
>>> m.svg.startswith("<svg")
True
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple
from xml.sax.saxutils import escape, quoteattr

from reactivex import Observable, Observer
from reactivex.notification import OnCompleted, OnError, OnNext
from reactivex.testing import TestScheduler
from reactivex.testing.recorded import Recorded

from operators import Late, Window
from streams import Event

__all__ = ["Marble", "Mark", "label_of", "marble", "record"]

Pipeline = Callable[..., Any]  # one source, or two with ``other=`` (joins)

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#6b6ecf", "#b07aa1", "#9c755f")
LANE_H = 64
LEFT = 88
RIGHT = 28
TOP = 12
R = 13
AXIS_H = 26  # the time axis under the lanes


class Mark(NamedTuple):
    """One notification on a lane: ``kind`` is ``"next"``, ``"complete"`` or ``"error"``."""

    t: float
    kind: str
    value: Any = None


def label_of(value: Any) -> str:
    """The short text drawn inside a marble.

    >>> label_of(3), label_of("hello world"), label_of({"room": "dev"}), label_of(2.50)
    ('3', 'hello worl…', 'dev', '2.5')
    """
    if isinstance(value, Event):
        value = value.data
    if isinstance(value, Mapping) and value:
        value = next(iter(value.values()))
    if isinstance(value, float):
        text = f"{value:.3g}"
    elif isinstance(value, tuple | list):
        text = ",".join(label_of(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= 10 else text[:10] + "…"


def _source(
    scheduler: TestScheduler,
    inputs: Iterable[tuple[float, Any]],
    end: float | None,
    error: tuple[float, Exception] | None,
) -> tuple[Observable[Any], list[Mark]]:
    marks = [Mark(float(t), "next", v) for t, v in inputs]
    if any(b.t < a.t for a, b in itertools.pairwise(marks)):
        raise ValueError("marble inputs must be in time order: [(t, value), ...]")
    if any(m.t < 0 for m in marks):
        raise ValueError("marble input times must be >= 0")
    if error is not None:
        marks.append(Mark(float(error[0]), "error", error[1]))
    elif end is not None:
        marks.append(Mark(float(end), "complete"))
    messages: list[Recorded[Any]] = []
    for m in marks:
        note = (
            OnNext(m.value)
            if m.kind == "next"
            else OnError(m.value)
            if m.kind == "error"
            else OnCompleted()
        )
        messages.append(Recorded(m.t, note))  # type: ignore[arg-type]
    return scheduler.create_hot_observable(messages), marks


def record(
    pipeline: Pipeline,
    inputs: Iterable[tuple[float, Any]],
    *,
    other: Iterable[tuple[float, Any]] | None = None,
    end: float | str | None = "auto",
    error: tuple[float, Exception] | None = None,
    until: float | None = None,
) -> dict[str, list[Mark]]:
    """Run ``pipeline`` on ``inputs`` in virtual time and record every lane.

    ``inputs`` are ``(time, value)`` pairs in time order. The source completes at ``end``
    (``"auto"``: one time unit after the last input; ``None``: never), or fails at
    ``error=(time, exception)``. Recording stops at ``until`` (default: a little after
    the last input or the end). Lanes: ``"input"``, then ``"output"`` or one per branch.

    With ``other`` (a second list of ``(time, value)``, for joins), the pipeline takes two
    sources, ``pipeline(source, other_source)``, and an ``"other"`` lane follows
    ``"input"``; the other source completes at ``end`` too.

    >>> from operators import interval_join
    >>> lanes = record(lambda s, o: s.pipe(interval_join(o, key=str.upper, lower=0, upper=2)),
    ...                [(1, "a"), (5, "b")], other=[(2, "A"), (4, "a"), (8, "b")])
    >>> [(m.t, m.value) for m in lanes["output"] if m.kind == "next"]
    [(2.0, ('a', 'A'))]

    >>> from operators import batch
    >>> lanes = record(lambda s: s.pipe(batch(count=2)), [(1, "a"), (2, "b"), (3, "c")])
    >>> lanes["output"]  # doctest: +NORMALIZE_WHITESPACE
    [Mark(t=2.0, kind='next', value=['a', 'b']), Mark(t=4.0, kind='next', value=['c']),
     Mark(t=4.0, kind='complete', value=None)]
    """
    inputs = list(inputs)
    others = None if other is None else list(other)
    last = max((float(t) for t, _ in [*inputs, *(others or [])]), default=0.0)
    if end == "auto":
        end = last + 1
    if isinstance(end, str):
        raise ValueError(f"end must be a time, None or 'auto', not {end!r}")
    scheduler = TestScheduler()
    source, input_marks = _source(scheduler, inputs, end, error)
    stop = max(last, input_marks[-1].t if input_marks else 0.0)
    horizon = float(until) if until is not None else stop + max(1.0, 0.05 * stop)
    lanes: dict[str, list[Mark]] = {"input": [m for m in input_marks if m.t <= horizon]}
    if others is None:
        result = pipeline(source)
    else:
        second, other_marks = _source(scheduler, others, end, None)
        lanes["other"] = [m for m in other_marks if m.t <= horizon]
        result = pipeline(source, second)
    outputs: Mapping[Any, Observable[Any]] = (
        result if isinstance(result, Mapping) else {"output": result}
    )
    subscriptions = []
    for name, observable in outputs.items():
        lane = lanes.setdefault(str(name), [])

        def now() -> float:
            return float(scheduler.clock)

        def observer(lane: list[Mark] = lane) -> Observer[Any]:
            return Observer(
                lambda v: lane.append(Mark(now(), "next", v)),
                lambda e: lane.append(Mark(now(), "error", e)),
                lambda: lane.append(Mark(now(), "complete")),
            )

        subscriptions.append(observable.subscribe(observer(), scheduler=scheduler))
    connect = getattr(result, "connect", None)
    if callable(connect):
        subscriptions.append(connect(scheduler))
    scheduler.advance_to(horizon)
    for s in subscriptions:
        s.dispose()
    return lanes


class Marble:
    """A recorded marble diagram: ``lanes`` (name -> marks), ``svg`` text, shown inline
    by Jupyter through ``_repr_svg_``."""

    def __init__(
        self,
        lanes: dict[str, list[Mark]],
        *,
        title: str | None = None,
        width: int = 640,
        label: Callable[[Any], str] = label_of,
        until: float | None = None,
    ) -> None:
        self.lanes = lanes
        self.title = title
        self.width = width
        self.label = label
        times = [m.t for lane in lanes.values() for m in lane]
        self.until = float(until) if until is not None else max(times, default=0.0) * 1.05 + 1
        self._span_end: dict[float, float] = {}
        self._span_row: dict[float, int] = {}
        self.svg = self._render()

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}: {len(v)}" for k, v in self.lanes.items())
        return f"<Marble {self.title or ''} ({counts})>"

    def _repr_svg_(self) -> str:
        return self.svg

    def values(self, lane: str = "output") -> list[Any]:
        """The values emitted on ``lane`` in order.

        >>> marble(lambda s: s, [(1, "x")]).values()
        ['x']
        """
        return [m.value for m in self.lanes[lane] if m.kind == "next"]

    def x(self, t: float) -> float:
        """The horizontal position of time ``t``."""
        return round(LEFT + t / self.until * (self.width - LEFT - RIGHT), 1)

    def _render(self) -> str:
        top = TOP + (22 if self.title else 0)
        axis_y = top + LANE_H * len(self.lanes) + 4
        height = axis_y + AXIS_H
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{height}" '
            f'viewBox="0 0 {self.width} {height}" font-family="sans-serif" font-size="11">',
            '<rect width="100%" height="100%" fill="white"/>',
        ]
        if self.title:
            out.append(f'<text x="8" y="{TOP + 10}" font-size="13" font-weight="bold">'
                       f"{escape(self.title)}</text>")  # fmt: skip
        for i, (name, marks) in enumerate(self.lanes.items()):
            y = top + LANE_H * i + LANE_H // 2 - 6
            out.extend(self._lane(name, marks, y))
        out.extend(self._axis(axis_y))
        out.append("</svg>")
        return "\n".join(out)

    def _axis(self, y: float) -> list[str]:
        """The time axis under the lanes: a tick and a label every :func:`tick_step`."""
        out = [
            '<g class="axis" font-size="9" fill="#555">',
            f'<line x1="{LEFT}" y1="{y}" x2="{self.width - RIGHT}" y2="{y}" stroke="#999"/>',
        ]
        step = tick_step(self.until)
        for i in range(int(self.until / step + 1e-9) + 1):
            t = round(i * step, 9)
            x = self.x(t)
            out.append(
                f'<g class="tick" data-t="{_n(t)}"><line x1="{x}" y1="{y}" x2="{x}" '
                f'y2="{y + 4}" stroke="#999"/><text x="{x}" y="{y + 14}" '
                f'text-anchor="middle">{_tick(t)}</text></g>'
            )
        out.append(f'<text x="8" y="{y + 14}">time (s)</text></g>')
        return out

    def _lane(self, name: str, marks: Sequence[Mark], y: float) -> list[str]:
        end = self.width - RIGHT + 14
        out = [
            f'<g class="lane" data-lane={quoteattr(name)}>',
            f'<text x="8" y="{y + 4}" fill="#333">{escape(name)}</text>',
            f'<line x1="{LEFT - 14}" y1="{y}" x2="{end}" y2="{y}" stroke="#555"/>',
            f'<path d="M{end} {y} l-8 -4 v8 z" fill="#555"/>',
        ]
        right = -1e9  # right edge of the previous marble: same-time marbles sit side by side
        for m in marks:
            x = self.x(m.t)
            if m.kind != "next":  # an end mark sits after a marble emitted at the same time
                x = max(x, round(right + 6, 1))
            if m.kind == "complete":
                out.append(
                    f'<line class="complete" data-t="{_n(m.t)}" x1="{x}" y1="{y - 14}" '
                    f'x2="{x}" y2="{y + 14}" stroke="#222" stroke-width="2.5"/>'
                )
                continue
            if m.kind == "error":
                out.append(
                    f'<g class="error" data-t="{_n(m.t)}" stroke="#c00" stroke-width="2.5">'
                    f"<title>{escape(f'{type(m.value).__name__}: {m.value}')}</title>"
                    f'<line x1="{x - 8}" y1="{y - 8}" x2="{x + 8}" y2="{y + 8}"/>'
                    f'<line x1="{x - 8}" y1="{y + 8}" x2="{x + 8}" y2="{y - 8}"/></g>'
                )
                continue
            piece, width = self._value(m, x, y, right)
            out.append(piece)
            right = width
        out.append("</g>")
        return out

    def _value(self, m: Mark, x: float, y: float, right: float) -> tuple[str, float]:
        v = m.value
        if isinstance(v, Window):
            text, cls, extra = self.label(v.value), "window", ""
            x0, x1 = self.x(max(0.0, v.start)) + 2, self.x(min(self.until, v.end)) - 2
            if x1 > x0:
                # overlapping spans (sliding windows) alternate between two rows
                row = 1 if x0 < self._span_end.get(y, -1.0) and not self._span_row.get(y) else 0
                self._span_end[y], self._span_row[y] = x1, row
                sy = y + 19 + 6 * row
                extra = (f'<path class="span" d="M{_n(x0)} {sy} v4 H{_n(x1)} v-4" fill="none" '
                         f'stroke="#888"/><text class="span-label" x="{_n((x0 + x1) / 2)}" '
                         f'y="{sy + 13}" font-size="9" fill="#666" text-anchor="middle">'
                         f"[{_tick(v.start)}, {_tick(v.end)})</text>")  # fmt: skip
        elif isinstance(v, Late):
            text, cls, extra = self.label(v.event), "late", ""
        elif isinstance(v, list):
            return self._batch(m, x, y, right)
        else:
            text, cls, extra = self.label(v), "marble", ""
        w = max(2 * R, 7 * len(text) + 10)
        cx = max(x, right + w / 2 + 2)
        dash = ' stroke-dasharray="3 2"' if cls == "late" else ""
        rx = 3 if cls == "window" else R
        piece = (
            f'<g class="{cls}" data-t="{_n(m.t)}" data-value={quoteattr(text)}>'
            f"<title>{escape(f't={_n(m.t)}: {v!r}')}</title>{extra}"
            f'<rect x="{_n(cx - w / 2)}" y="{y - R}" width="{_n(w)}" height="{2 * R}" '
            f'rx="{rx}" fill="{_color(text)}" stroke="#222"{dash}/>'
            f'<text x="{_n(cx)}" y="{y + 4}" text-anchor="middle" fill="white">{escape(text)}'
            "</text></g>"
        )
        return piece, cx + w / 2

    def _batch(self, m: Mark, x: float, y: float, right: float) -> tuple[str, float]:
        items: list[Any] = m.value
        shown = items[:5]
        labels = [self.label(i) for i in shown]
        widths = [max(18, 7 * len(t) + 6) for t in labels]
        more = len(items) - len(shown)
        w = sum(widths) + 2 * (len(widths) - 1) + (22 if more else 0) + 8
        w = max(w, 16)
        left = max(x - w / 2, right + 2)
        parts = [
            f'<g class="batch" data-t="{_n(m.t)}" data-size="{len(items)}">'
            f"<title>{escape(f't={_n(m.t)}: {items!r}')}</title>"
            f'<rect x="{_n(left)}" y="{y - 15}" width="{_n(w)}" height="30" rx="8" '
            'fill="#f4f4f4" stroke="#222"/>'
        ]
        cursor = left + 4
        for text, iw in zip(labels, widths, strict=True):
            parts.append(
                f'<g class="item" data-value={quoteattr(text)}>'
                f'<rect x="{_n(cursor)}" y="{y - 10}" width="{iw}" height="20" rx="10" '
                f'fill="{_color(text)}"/><text x="{_n(cursor + iw / 2)}" y="{y + 4}" '
                f'text-anchor="middle" fill="white">{escape(text)}</text></g>'
            )
            cursor += iw + 2
        if more:
            parts.append(f'<text x="{_n(cursor + 2)}" y="{y + 4}">+{more}</text>')
        parts.append("</g>")
        return "".join(parts), left + w


def tick_step(until: float, most: int = 10) -> float:
    """A round time step (1, 2 or 5 times a power of ten) giving at most ``most`` ticks.

    >>> tick_step(10), tick_step(9), tick_step(0.4), tick_step(250)
    (1.0, 1.0, 0.05, 50.0)
    """
    if until <= 0:
        return 1.0
    raw = until / most
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw - 1e-12:
            return float(round(factor * power, 12))
    return 10 * power  # pragma: no cover (10 always suffices)


def _tick(t: float) -> str:
    """A tick label: ``2``, ``0.25``, ``1.5`` (no float noise)."""
    return f"{t:.6g}"


def _n(x: float) -> str:
    """Stable number formatting: at most one decimal, no trailing ``.0``."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _color(label: str) -> str:
    return PALETTE[zlib.crc32(label.encode()) % len(PALETTE)]


def marble(
    pipeline: Pipeline,
    inputs: Iterable[tuple[float, Any]],
    *,
    other: Iterable[tuple[float, Any]] | None = None,
    title: str | None = None,
    end: float | str | None = "auto",
    error: tuple[float, Exception] | None = None,
    until: float | None = None,
    width: int = 640,
    label: Callable[[Any], str] = label_of,
) -> Marble:
    """Record ``pipeline`` on ``inputs`` (see :func:`record`) and draw it. With ``other``,
    a join's second input, the pipeline takes two sources and both input lanes are drawn.

    >>> from operators import route
    >>> m = marble(
    ...     lambda s: s.pipe(route(lambda w: w[0], ["a", "b"])),
    ...     [(1, "apple"), (2, "bean"), (3, "avocado")],
    ...     title="route by first letter",
    ... )
    >>> list(m.lanes), m.values("a")
    (['input', 'a', 'b'], ['apple', 'avocado'])
    """
    lanes = record(pipeline, inputs, other=other, end=end, error=error, until=until)
    return Marble(lanes, title=title, width=width, label=label, until=until)

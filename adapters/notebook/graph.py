"""A pipeline graph with per-stage counters, drawn as SVG (no graphviz needed).

Stages are the named probes of :mod:`operators.instrument`: build the pipeline inside
``instrument.enabled()`` with ``instrumented("name", op)`` around the stages to watch, then
draw. The graph keeps the live counter objects, so each render shows the current numbers
(events in and out, rate, buffer depth); ``watch(graph)`` redraws it in place in a cell.

The rate is events per second of wall time between a stage's first and latest input: for
a stream still flowing, its live rate; for a finite source that has finished, how fast it
ran, labelled with how long that took ("1,000 in 4.2 ms"). With fewer than two inputs
there is no rate, and none is shown.

>>> import reactivex
>>> from operators import batch, instrument, where
>>> instrument.reset()
>>> with instrument.enabled():
...     pipe = reactivex.of(*range(10)).pipe(
...         instrument.instrumented("evens", where(lambda x: x % 2 == 0)),
...         instrument.instrumented("pairs", batch(count=2), batches=True),
...     )
>>> _ = pipe.subscribe()
>>> g = pipeline_graph()
>>> [(r["stage"], r["in"], r["out"]) for r in g.rows()]
[('evens', 10, 5), ('pairs', 5, 3)]
>>> g.edges
[('evens', 'pairs')]
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from operators import instrument
from operators.instrument import StageStats

__all__ = [
    "PipelineGraph",
    "StageRate",
    "human_span",
    "partition_graph",
    "pipeline_graph",
    "stage_rate",
]

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 196, 86, 56, 22, 12
IDLE = 2.0  # seconds without input after which a stage counts as finished, not flowing


def human_span(seconds: float) -> str:
    """A duration for a label.

    >>> human_span(0.0042), human_span(0.85), human_span(12.3), human_span(125)
    ('4.2 ms', '850 ms', '12.3 s', '2 min 5 s')
    """
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


@dataclass(frozen=True, slots=True)
class StageRate:
    """What a stage's counters say about its pace.

    ``per_second`` is ``None`` below two inputs; ``flowing`` is true while inputs keep
    arriving (the latest less than :data:`IDLE` seconds ago).
    """

    per_second: float | None
    span: float
    flowing: bool

    def label(self, events: int) -> str:
        """``rate 1,234.5/s`` while flowing, ``1,000 in 4.2 ms (238,095/s)`` once done,
        ``rate —`` without one.

        >>> StageRate(None, 0.0, False).label(1), StageRate(10.0, 9.9, True).label(100)
        ('rate —', 'rate 10.0/s')
        >>> StageRate(250_000.0, 0.004, False).label(1000)
        '1,000 in 4.0 ms (250,000/s)'
        """
        if self.per_second is None:
            return "rate —"
        if self.flowing:
            return f"rate {self.per_second:,.1f}/s"
        return f"{events:,} in {human_span(self.span)} ({self.per_second:,.0f}/s)"


def stage_rate(s: StageStats, now: float | None = None) -> StageRate:
    """The pace of one stage: inputs after the first, over the time since the first.

    >>> st = StageStats("x", events_in=11, first=100.0, last=102.0)
    >>> stage_rate(st, now=102.5), stage_rate(st, now=110.0).flowing
    (StageRate(per_second=5.0, span=2.0, flowing=True), False)
    >>> stage_rate(StageStats("y", events_in=1, first=1.0, last=1.0), now=1.0).per_second
    """
    now = time.monotonic() if now is None else now
    span = s.last - s.first
    if s.events_in < 2 or span <= 0:
        return StageRate(None, max(span, 0.0), False)
    return StageRate((s.events_in - 1) / span, span, now - s.last < IDLE)


class PipelineGraph:
    """Stages (name -> live :class:`StageStats`, or ``None`` for an uncounted node) and
    edges; ``svg`` renders the current counters."""

    def __init__(
        self,
        stages: Mapping[str, StageStats | None],
        edges: list[tuple[str, str]],
        title: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        notes: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.clock = clock
        self.notes = dict(notes or {})  # extra lines in a node's box (e.g. its owner)
        self.stages = dict(stages)
        for a, b in edges:
            self.stages.setdefault(a, None)
            self.stages.setdefault(b, None)
        self.edges = edges
        self.title = title

    def rows(self) -> list[dict[str, Any]]:
        """The counters as a list of dicts (one per counted stage), for tables and asserts:
        ``rate`` is events/s of wall time while inputs arrived (``None`` below two),
        ``seconds`` how long that was, ``flowing`` whether inputs are still arriving."""
        now = self.clock()
        out = []
        for name, s in self.stages.items():
            if s is None:
                continue
            r = stage_rate(s, now)
            out.append(
                {
                    "stage": name,
                    "in": s.events_in,
                    "out": s.events_out,
                    "items_out": s.items_out,
                    "rate": None if r.per_second is None else round(r.per_second, 1),
                    "seconds": r.span,
                    "flowing": r.flowing,
                    "buffer": s.buffer_depth,
                }
            )
        return out

    def layers(self) -> dict[str, int]:
        """Column of each node: the longest path from a node without inputs."""
        layer = dict.fromkeys(self.stages, 0)
        for _ in range(len(self.stages)):
            changed = False
            for a, b in self.edges:
                if layer[b] < layer[a] + 1:
                    layer[b] = layer[a] + 1
                    changed = True
            if not changed:
                return layer
        raise ValueError("the pipeline graph has a cycle")

    def positions(self) -> dict[str, tuple[float, float]]:
        """Top-left corner of each node's box."""
        layer = self.layers()
        row: dict[int, int] = {}
        pos: dict[str, tuple[float, float]] = {}
        top = PAD + (24 if self.title else 0)
        for name in self.stages:
            col = layer[name]
            r = row[col] = row.get(col, -1) + 1
            pos[name] = (PAD + col * (BOX_W + GAP_X), top + r * (BOX_H + GAP_Y))
        return pos

    @property
    def svg(self) -> str:
        """The graph as SVG text, with the counters as they are now."""
        pos = self.positions()
        width = max((x for x, _ in pos.values()), default=0) + BOX_W + PAD
        height = max((y for _, y in pos.values()), default=0) + BOX_H + PAD
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
            '<rect width="100%" height="100%" fill="white"/>',
        ]
        if self.title:
            out.append(f'<text x="{PAD}" y="{PAD + 12}" font-size="13" font-weight="bold">'
                       f"{escape(self.title)}</text>")  # fmt: skip
        for a, b in self.edges:
            (ax, ay), (bx, by) = pos[a], pos[b]
            x1, y1, x2, y2 = ax + BOX_W, ay + BOX_H / 2, bx, by + BOX_H / 2
            sa, sb = self.stages[a], self.stages[b]
            flow = f"{sb.events_in:,}" if sb is not None else ""
            if sb is None and sa is not None:
                flow = f"{sa.events_out:,}"
            lx, ly = x1 + (x2 - x1) * 0.7, y1 + (y2 - y1) * 0.7 - 5
            out.append(
                f'<g class="edge" data-from={quoteattr(a)} data-to={quoteattr(b)}>'
                f'<line x1="{x1}" y1="{y1}" x2="{x2 - 6}" y2="{y2}" stroke="#555"/>'
                f'<path d="M{x2} {y2} l-8 -4 v8 z" fill="#555"/>'
                f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle" '
                f'fill="#555">{flow}</text></g>'
            )
        for name, s in self.stages.items():
            out.append(self._node(name, s, *pos[name]))
        out.append("</svg>")
        return "\n".join(out)

    def _node(self, name: str, s: StageStats | None, x: float, y: float) -> str:
        lines = []
        if s is not None:
            pace = stage_rate(s, self.clock()).label(s.events_in)
            lines = [f"in {s.events_in:,} → out {s.events_out:,}", pace]
            if s.batches:
                lines.append(f"buffer {s.buffer_depth:,} · items {s.items_out:,}")
        lines += self.notes.get(name, [])
        attrs = "" if s is None else (
            f' data-in="{s.events_in}" data-out="{s.events_out}" data-buffer="{s.buffer_depth}"'
        )  # fmt: skip
        fill = "#eef3fb" if s is not None else "#f4f4f4"
        text = "".join(
            f'<text x="{x + 10}" y="{y + 42 + 16 * i}" fill="#333">{escape(t)}</text>'
            for i, t in enumerate(lines)
        )
        return (
            f'<g class="stage" data-name={quoteattr(name)}{attrs}>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" '
            f'stroke="#4e79a7"/><text x="{x + 10}" y="{y + 20}" font-size="13" '
            f'font-weight="bold">{escape(name)}</text>{text}</g>'
        )

    def _repr_svg_(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        rows = ", ".join(f"{r['stage']} {r['in']}→{r['out']}" for r in self.rows())
        return f"<PipelineGraph {rows}>"


def pipeline_graph(
    stages: Mapping[str, StageStats | None] | Iterable[str] | None = None,
    *,
    edges: Iterable[tuple[str, str]] | None = None,
    title: str | None = None,
) -> PipelineGraph:
    """A graph of instrumented stages: by default every stage in ``instrument.stats()``,
    chained in the order they were built; ``edges`` (pairs of names) describe any other
    shape, and names without counters (``"source"``, ``"sink"``) become plain nodes.

    >>> g = pipeline_graph({"parse": None, "store": None})
    >>> g.edges, 'data-name="parse"' in g.svg
    ([('parse', 'store')], True)
    """
    known = instrument.stats()
    if stages is None:
        chosen: dict[str, StageStats | None] = dict(known)
    elif isinstance(stages, Mapping):
        chosen = dict(stages)
    else:
        chosen = {name: known.get(name) for name in stages}
    names = list(chosen)
    pairs = list(edges) if edges is not None else list(itertools.pairwise(names))
    return PipelineGraph(chosen, pairs, title)


def partition_graph(units: Iterable[Mapping[str, Any]], title: str | None = None) -> PipelineGraph:
    """A keyed worker group as a graph: the router feeding each partition, every box with
    its owner (the member holding its lease, ``-`` for none), checkpoint position (events
    processed) and state size. ``units`` are dicts with ``unit``, ``owner``, ``position``,
    ``events`` and ``state_bytes`` (what ``adapters.notebook.scaleout`` reads from the
    broker).

    >>> g = partition_graph([
    ...     {"unit": "router", "owner": "w0", "position": "e-9", "events": 9, "state_bytes": 0},
    ...     {"unit": "p0", "owner": None, "position": "e-4", "events": 4, "state_bytes": 120},
    ... ])
    >>> g.edges, g.notes["p0"]
    ([('router', 'p0')], ['owner -', 'at e-4 · 4 events', 'state 120 B'])
    """
    notes: dict[str, list[str]] = {}
    for u in units:
        notes[str(u["unit"])] = [
            f"owner {u.get('owner') or '-'}",
            f"at {u.get('position') or '-'} · {int(u.get('events') or 0):,} events",
            f"state {int(u.get('state_bytes') or 0):,} B",
        ]
    names = list(notes)
    router = [n for n in names if n == "router"]
    edges = [(r, n) for r in router for n in names if n != r]
    return PipelineGraph(dict.fromkeys(names), edges, title, notes=notes)

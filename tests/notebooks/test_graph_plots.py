"""Pipeline graphs (instrumented counters as SVG) and window plots (matplotlib figures)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
import reactivex
from reactivex import Subject

from adapters.notebook import pipeline_graph, plot_windows, window_series
from operators import Late, Window, batch, instrument, route, select, tumbling, where
from operators.windows import count_of


@pytest.fixture(autouse=True)
def fresh_counters() -> Iterator[None]:
    instrument.reset()
    yield
    instrument.reset()


def first(word: str) -> str:
    return word[0]


def xy(line: Any) -> tuple[list[float], list[float]]:
    return line.get_xdata().tolist(), line.get_ydata().tolist()


def stage_attrs(svg: str) -> dict[str, dict[str, str]]:
    root = ET.fromstring(svg)
    return {
        g.get("data-name", ""): dict(g.attrib) for g in root.iter() if g.get("class") == "stage"
    }


def test_graph_counts_in_out_and_buffer_depth_live() -> None:
    src: Subject[int] = Subject()
    with instrument.enabled():
        pipe = src.pipe(
            instrument.instrumented("odd", where(lambda x: x % 2)),
            instrument.instrumented("x10", select(lambda x: x * 10)),
            instrument.instrumented("by 4", batch(count=4), batches=True),
        )
    out: list[list[int]] = []
    pipe.subscribe(out.append)
    for i in range(11):
        src.on_next(i)
    g = pipeline_graph(title="t")
    assert g.edges == [("odd", "x10"), ("x10", "by 4")]
    assert [(r["stage"], r["in"], r["out"], r["buffer"]) for r in g.rows()] == [
        ("odd", 11, 5, 0),
        ("x10", 5, 5, 0),
        ("by 4", 5, 1, 1),  # one event waits in the open batch
    ]
    attrs = stage_attrs(g.svg)
    assert attrs["by 4"]["data-buffer"] == "1" and attrs["odd"]["data-in"] == "11"
    src.on_completed()  # the graph reads the live counters: the flush shows up
    assert stage_attrs(g.svg)["by 4"]["data-buffer"] == "0" and out == [[10, 30, 50, 70], [90]]


def test_branching_graph_with_explicit_edges_and_plain_nodes() -> None:
    with instrument.enabled():
        bs = reactivex.of("a1", "b1", "a2").pipe(
            instrument.instrumented("in"), route(first, ["a", "b"])
        )
        for name in bs:
            bs[name].pipe(instrument.instrumented(f"to {name}")).subscribe()
    bs.connect()
    g = pipeline_graph(edges=[("source", "in"), ("in", "to a"), ("in", "to b")])
    assert g.layers() == {"in": 1, "to a": 2, "to b": 2, "source": 0}
    root = ET.fromstring(g.svg)
    edges = {(e.get("data-from"), e.get("data-to")): "".join(e.itertext()) for e in root.iter()
             if e.get("class") == "edge"}  # fmt: skip
    assert edges == {("source", "in"): "3", ("in", "to a"): "2", ("in", "to b"): "1"}
    assert "data-in" not in stage_attrs(g.svg)["source"]


def test_switched_off_instrumentation_leaves_an_empty_graph() -> None:
    reactivex.of(1).pipe(instrument.instrumented("off", where(bool))).subscribe()
    assert pipeline_graph().rows() == []


def test_cycles_are_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        pipeline_graph({"a": None, "b": None}, edges=[("a", "b"), ("b", "a")]).svg  # noqa: B018


def windows_of(events: list[tuple[float, str]]) -> list[Window | Late[tuple[float, str]]]:
    out: list[Window | Late[tuple[float, str]]] = []
    reactivex.from_iterable(events).pipe(
        tumbling(10, key=lambda e: e[1], timestamp=lambda e: e[0], agg=count_of())
    ).subscribe(out.append)
    return out


def test_line_plot_has_one_series_per_key_with_the_window_values() -> None:
    ws = windows_of([(1, "b"), (2, "a"), (3, "a"), (12, "a"), (25, "b"), (1, "a")])
    assert any(isinstance(w, Late) for w in ws)  # left out of the plot
    fig = plot_windows(ws, title="counts")
    ax = fig.axes[0]
    lines = {ln.get_label(): xy(ln) for ln in ax.lines}
    assert lines == {"a": ([10.0, 20.0], [2, 1]), "b": ([10.0, 30.0], [1, 1])}
    assert ax.get_title() == "counts" and ax.get_legend() is not None
    assert type(fig).__name__ == "Figure"


def test_bar_plot_spans_each_window() -> None:
    ws = [Window(None, 0.0, 5.0, [1, 2]), Window(None, 5.0, 10.0, [3])]
    fig = plot_windows(ws, kind="bar", value=len)
    bars: list[Any] = list(fig.axes[0].patches)
    assert [(b.get_x(), b.get_width(), b.get_height()) for b in bars] == [
        (0.0, 4.5, 2.0),
        (5.0, 4.5, 1.0),
    ]
    assert window_series(ws, len) == {None: ([0.0, 5.0], [5.0, 10.0], [2, 1])}


def test_unknown_plot_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        plot_windows([], kind="pie")

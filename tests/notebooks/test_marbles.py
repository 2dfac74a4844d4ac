"""Marble diagrams: recorded lanes on virtual time and the SVG drawn from them."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.notebook import marble, record
from adapters.notebook.marbles import Mark
from operators import batch, route, tumbling, where
from operators.windows import count_of

SVG = "{http://www.w3.org/2000/svg}"


def groups(svg: str, cls: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter() if g.get("class") == cls]


def odd(x: int) -> bool:
    return x % 2 == 1


def first(word: str) -> str:
    return word[0]


def text_x(g: ET.Element) -> float:
    text = g.find(f"{SVG}text")
    assert text is not None
    return float(text.get("x", "nan"))


def lane_of(svg: str, name: str) -> ET.Element:
    [lane] = [g for g in groups(svg, "lane") if g.get("data-lane") == name]
    return lane


def test_filter_lanes_and_marble_positions() -> None:
    m = marble(lambda s: s.pipe(where(odd)), [(1, 1), (2, 2), (3, 3), (4, 4)])
    assert m.lanes["output"] == [Mark(1.0, "next", 1), Mark(3.0, "next", 3), Mark(5.0, "complete")]
    out = lane_of(m.svg, "output")
    marbles = [g for g in out.iter() if g.get("class") == "marble"]
    assert [(g.get("data-t"), g.get("data-value")) for g in marbles] == [("1", "1"), ("3", "3")]
    xs = [text_x(g) for g in marbles]
    assert xs == [m.x(1.0), m.x(3.0)] and xs[0] < xs[1]
    [done] = [e for e in out.iter() if e.get("class") == "complete"]
    assert done.get("data-t") == "5" and float(done.get("x1", 0)) == m.x(5.0)


def test_svg_is_deterministic() -> None:
    def draw() -> str:
        return marble(lambda s: s.pipe(batch(count=2)), [(1, "a"), (2, "b"), (3, "c")]).svg

    assert draw() == draw()


def test_batches_are_grouped_marbles() -> None:
    m = marble(lambda s: s.pipe(batch(count=2, within=3.0)), [(1, "a"), (2, "b"), (4, "c")])
    assert m.values() == [["a", "b"], ["c"]]
    batches = groups(m.svg, "batch")
    assert [(b.get("data-t"), b.get("data-size")) for b in batches] == [("2", "2"), ("5", "1")]
    items = [[i.get("data-value") for i in b.iter() if i.get("class") == "item"] for b in batches]
    assert items == [["a", "b"], ["c"]]


def test_routing_draws_one_lane_per_branch() -> None:
    m = marble(
        lambda s: s.pipe(route(first, ["a", "b"], unmatched="rest")),
        [(1, "ax"), (2, "bx"), (3, "cx")],
    )
    assert [g.get("data-lane") for g in groups(m.svg, "lane")] == ["input", "a", "b", "rest"]
    assert (m.values("a"), m.values("b"), m.values("rest")) == (["ax"], ["bx"], ["cx"])


def test_windows_show_their_span_and_errors_a_cross() -> None:
    m = marble(
        lambda s: s.pipe(tumbling(5, agg=count_of())),
        [(1, "a"), (2, "b"), (6, "c")],
        error=(8, RuntimeError("boom")),
    )
    windows = groups(m.svg, "window")
    assert [(w.get("data-t"), w.get("data-value")) for w in windows] == [("5", "2")]
    [span] = [e for e in windows[0].iter() if e.get("class") == "span"]
    assert span.get("d", "").startswith(f"M{m.x(0) + 2:g} ")
    errors = groups(m.svg, "error")
    assert [e.get("data-t") for e in errors] == ["8", "8"]  # input and output lanes
    assert "RuntimeError: boom" in "".join(errors[1].itertext())


def test_virtual_time_drives_timers_without_waiting() -> None:
    lanes = record(lambda s: s.pipe(batch(within=1000.0)), [(1, "a")], end=None, until=2000)
    assert lanes["output"] == [Mark(1001.0, "next", ["a"])]


def test_bad_inputs_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="time order"):
        record(lambda s: s, [(2, "a"), (1, "b")])
    with pytest.raises(ValueError, match=">= 0"):
        record(lambda s: s, [(-1, "a")])


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(-99, 99)), max_size=12))
def test_identity_pipeline_copies_input_and_positions_follow_time(
    raw: list[tuple[int, int]],
) -> None:
    inputs = sorted(raw, key=lambda p: p[0])
    m = marble(lambda s: s, inputs)
    assert m.values() == [v for _, v in inputs]
    assert [mk.t for mk in m.lanes["output"] if mk.kind == "next"] == [t for t, _ in inputs]
    marbles = [g for g in lane_of(m.svg, "output").iter() if g.get("class") == "marble"]
    xs = [text_x(g) for g in marbles]
    assert xs == sorted(xs) and len(xs) == len(inputs)
    assert all(x >= m.x(t) for x, (t, _) in zip(xs, inputs, strict=True))


def test_a_time_axis_with_round_ticks_shows_when_things_happened() -> None:
    m = marble(lambda s: s.pipe(batch(count=3, within=2.0)), [(1, "a"), (2, "b"), (6, "c")])
    ticks = groups(m.svg, "tick")
    times = [float(g.get("data-t") or "nan") for g in ticks]
    steps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert times[0] == 0 and len(steps) == 1
    assert times[-1] <= m.until and len(times) <= 11
    # a tick sits exactly where a marble emitted at that time sits
    [tick3] = [g for g in ticks if g.get("data-t") == "3"]
    assert [t.text for t in tick3.iter(f"{SVG}text")] == ["3"]
    assert float(tick3.find(f"{SVG}line").get("x1")) == m.x(3)  # type: ignore[union-attr]


def test_window_spans_are_labelled_with_their_bounds() -> None:
    m = marble(
        lambda s: s.pipe(tumbling(5.0, timestamp=lambda v: v, agg=count_of())),
        [(1, 1.0), (2, 2.0), (7, 7.0)],
    )
    labels = [t.text for g in groups(m.svg, "window") for t in g.iter(f"{SVG}text")
              if t.get("class") == "span-label"]  # fmt: skip
    assert labels == ["[0, 5)", "[5, 10)"]

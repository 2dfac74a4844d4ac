"""Pipeline-graph rates that mean something: a finished finite source says how fast it ran
and for how long; a flowing one shows its live rate; one event shows none."""

from __future__ import annotations

import re

import reactivex

from adapters.notebook import pipeline_graph
from operators import instrument, where


def build(n: int) -> None:
    instrument.reset()
    with instrument.enabled():
        pipe = reactivex.of(*range(n)).pipe(
            instrument.instrumented("evens", where(lambda x: x % 2 == 0))
        )
    pipe.subscribe()


def test_a_finished_finite_source_shows_how_fast_it_ran_and_for_how_long() -> None:
    build(1000)
    stats = instrument.stats()["evens"]
    later = stats.last + 60.0  # read a minute after it finished
    graph = pipeline_graph()
    graph.clock = lambda: later
    [row] = graph.rows()
    assert row["in"] == 1000 and row["flowing"] is False
    assert row["rate"] == round(999 / (stats.last - stats.first), 1)
    assert re.search(r"1,000 in [\d.]+ (ms|s) \([\d,]+/s\)", graph.svg), graph.svg


def test_a_flowing_stage_shows_its_live_rate() -> None:
    build(11)
    stats = instrument.stats()["evens"]
    stats.first, stats.last = 100.0, 102.0  # 11 inputs over 2 s
    graph = pipeline_graph()
    graph.clock = lambda: 102.5
    [row] = graph.rows()
    assert (row["rate"], row["flowing"]) == (5.0, True)
    assert "rate 5.0/s" in graph.svg


def test_a_single_event_has_no_rate() -> None:
    build(1)
    graph = pipeline_graph()
    [row] = graph.rows()
    assert row["rate"] is None
    assert "rate —" in graph.svg and "0.0/s" not in graph.svg

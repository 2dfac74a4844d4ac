"""Regressions found reviewing the MemoryBroker split (eventlog + dispatch)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams import Event, EventError, MemoryBroker, Position, Retention

RETENTIONS = [Retention(), Retention(max_bytes=10_000), Retention(max_per_subject=2)]


@pytest.mark.parametrize("retention", RETENTIONS)
def test_publish_returns_its_own_position_when_a_subscriber_publishes(retention: Retention) -> None:
    b = MemoryBroker(retention)

    def echo(e: Event) -> None:
        b.publish("out", {"echo": e.data})

    b.subscribe("in").subscribe(echo)
    p = b.publish("in", {"n": 1})
    assert p.offset == 1
    assert b.history("in")[0].sequence == str(p)
    assert [e.sequence for e in b.history("out")] == [str(Position(b.epoch, 2))]


@given(
    names=st.lists(
        st.text(alphabet="abcXYZ_-09", min_size=1, max_size=25).filter(lambda k: k != "data"),
        min_size=1,
        max_size=3,
        unique=True,
    )
)
def test_byte_bounded_history_keeps_extensions_made_in_code(names: list[str]) -> None:
    # Event(extensions=...) does not validate names (only decoding does); the
    # byte-bounded log must still give back what was published, not raise.
    ext = {f"x{k}": i for i, k in enumerate(names)}
    b = MemoryBroker(Retention(max_bytes=10_000))
    sent = Event(id="1", source="s", type="t", data={"n": 1}, extensions=ext)
    b.publish("a.b", sent)
    replayed: list[Event] = []
    b.subscribe("a.*", Position(b.epoch, 0)).subscribe(replayed.append)
    assert b.history("a.*") == b.last("a.b", 1) == replayed == [sent]
    assert replayed[0].extensions == ext


def test_byte_bounded_publish_many_stores_nothing_when_an_extension_cannot_encode() -> None:
    b = MemoryBroker(Retention(max_bytes=10_000))
    got: list[Event] = []
    b.subscribe(">").subscribe(got.append)
    ok = Event(id="1", source="s", type="t", data=1)
    bad = Event(id="2", source="s", type="t", data=2, extensions={"x": object()})
    with pytest.raises(EventError):
        b.publish_many("a", [ok, bad])
    assert (len(b), b.published, got, b.latest()) == (0, 0, [], None)
    b.publish_many("a", [ok])
    assert got == b.history("a") == [ok]

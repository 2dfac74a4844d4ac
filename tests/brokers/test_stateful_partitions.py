"""Keyed worker groups, the decisions (no I/O): partitions, assignment, the partition
envelope, checkpoints, and the property every checkpoint relies on: a pipeline restored
from a snapshot goes on exactly as if it had never stopped."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.brokers.partitions import (
    Checkpoint,
    CheckpointPolicy,
    KeyMissing,
    assign,
    from_partition,
    key_function,
    output_event,
    output_id,
    partition_of,
    to_partition,
    units,
)
from adapters.brokers.stateful_worker import Inbox, PartitionPipeline
from operators import partition
from operators.state import StageNameError, collecting, register
from streams import Event, MemoryBroker, Position
from tests.integration.stateful_pipelines import canonical, make_inputs, oracle, pipeline

# The pipeline properties run whole pipelines: a fifth of the profile's examples.
heavy = settings(max_examples=max(10, settings.default.max_examples // 5))
members = st.lists(st.text("abcdefgh", min_size=1, max_size=3), max_size=8, unique=True)


@given(members, st.integers(1, 40))
def test_every_unit_has_exactly_one_owner_and_the_load_is_balanced(
    names: list[str], n: int
) -> None:
    plan = assign(units(n), names)
    owned = Counter(u for us in plan.values() for u in us)
    if not names:
        assert plan == {}
        return
    assert set(plan) == set(names)
    assert owned == Counter(units(n))  # every unit once: at most one owner, none orphaned
    sizes = [len(us) for us in plan.values()]
    assert max(sizes) - min(sizes) <= 1


@given(members, st.integers(1, 20), st.randoms())
def test_assignment_does_not_depend_on_who_asks_or_in_what_order(
    names: list[str], n: int, rnd: Any
) -> None:
    shuffled = list(names)
    rnd.shuffle(shuffled)
    assert assign(units(n), shuffled) == assign(units(n), names)


keys = st.one_of(st.text(max_size=10), st.integers(), st.booleans(), st.binary(max_size=8))


@given(keys, st.integers(1, 64))
def test_partition_is_the_one_operators_partition_picks(key: Any, n: int) -> None:
    branches = reactivex.of(key).pipe(partition(n, key=lambda k: k))
    got: list[int] = []
    for i in branches:
        branches[i].subscribe(lambda _, i=i: got.append(i))
    branches.connect()
    assert got == [partition_of(key, n)]
    assert 0 <= got[0] < n


@pytest.mark.parametrize("bad", [None, {"a": 1}, [1, 2]])
def test_a_key_that_is_not_a_scalar_is_missing(bad: Any) -> None:
    with pytest.raises(KeyMissing):
        partition_of(bad, 4)


def test_key_specs() -> None:
    e = Event.create({"room": "r1", "u": {"id": 3}}, subject="chat.r1.msg", type="t")
    assert key_function("data.room")(e) == "r1"
    assert key_function("data.u.id")(e) == 3
    assert key_function("subject[1]")(e) == "r1"
    assert key_function("subject[-1]")(e) == "msg"
    assert key_function("type")(e) == "t"
    assert key_function(lambda ev: ev.data["room"])(e) == "r1"
    with pytest.raises(KeyMissing):
        key_function("data.nope")(e)
    with pytest.raises(KeyMissing):
        key_function("subject[7]")(e)
    with pytest.raises(ValueError):
        key_function("room")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
tokens = st.text("abcxyz0123", min_size=1, max_size=4)


@given(json_values, st.lists(tokens, min_size=1, max_size=4), st.integers(0, 99))
def test_an_event_comes_back_from_its_partition_unchanged(
    data: Any, subject: list[str], p: int
) -> None:
    e = Event.create(data, subject=".".join(subject), id="id-1")
    copy = to_partition(e, "grp", p)
    assert copy.id != e.id  # not a duplicate of the input in the broker's window
    back = from_partition(Event.decode(copy.encode()))
    assert back == e
    assert (back.subject, back.data, back.id, back.time) == (e.subject, e.data, e.id, e.time)


@given(
    st.text(max_size=12),
    st.dictionaries(st.text(max_size=6), json_values | st.binary(max_size=6), max_size=4),
    st.lists(st.binary(min_size=1, max_size=6).map(lambda b: b.hex().encode()), max_size=3),
    st.integers(0, 10**9),
)
def test_checkpoints_round_trip(
    position: str, state: dict[str, Any], outbox: list[bytes], events: int
) -> None:
    c = Checkpoint(position or None, state, outbox, events)
    assert Checkpoint.decode(c.encode()) == c


@given(st.integers(0, 5000), st.floats(0, 5), st.integers(0, 2000), st.floats(0.01, 3))
def test_a_checkpoint_is_due_after_enough_events_or_time(
    n: int, elapsed: float, every: int, seconds: float
) -> None:
    due = CheckpointPolicy(every, seconds).due(n, elapsed)
    assert due == (n > 0 and every > 0 and (n >= every or elapsed >= seconds))


def test_outputs_get_deterministic_ids_and_a_subject() -> None:
    cause = Event.create({"x": 1}, subject="in.a")
    subject, out = output_event({"n": 2}, output_id("g", "p1", 7, 0), cause, "out.n")
    assert (subject, out.id, out.data, out.time) == ("out.n", "g:p1:7:0", {"n": 2}, cause.time)
    again = output_event({"n": 2}, output_id("g", "p1", 7, 0), cause, "out.n")[1]
    assert again.encode() == out.encode()
    kept = output_event(Event.create(1, subject="room.r1.msg"), "i", cause, None)
    assert kept[0] == "room.r1.msg"
    with pytest.raises(ValueError, match="--to"):
        output_event({"n": 2}, "i", cause, None)


def test_stage_names_are_unique() -> None:
    class S:
        def snapshot(self) -> dict[str, Any]:
            return {}

        def restore(self, state: Any) -> None:
            pass

    with collecting() as stages, pytest.raises(StageNameError):
        register(S(), "a")
        register(S(), "a")
    assert list(stages) == ["a"]


def _events(records: list[dict[str, Any]]) -> list[Event]:
    return [Event.create(d, subject="in.msg") for d in records]


@heavy
@given(st.integers(0, 600), st.integers(0, 600), st.integers(0, 2**16))
def test_a_restored_pipeline_goes_on_as_if_it_never_stopped(a: int, b: int, seed: int) -> None:
    events = _events(make_inputs(600, rooms=3, seed=seed))
    cut1, cut2 = sorted((a, b))
    whole: list[bytes] = []
    one = PartitionPipeline(pipeline)
    for e in events:
        whole += [canonical(v) for v in one.feed(e)]
    pieces: list[bytes] = []
    state: dict[str, Any] = {}
    for chunk in (events[:cut1], events[cut1:cut2], events[cut2:]):
        p = PartitionPipeline(pipeline)
        # through the checkpoint's encoding, as a new owner would get it
        p.restore(Checkpoint.decode(Checkpoint("e-1", state).encode()).state)  # type: ignore[union-attr]
        for e in chunk:
            pieces += [canonical(v) for v in p.feed(e)]
        state = p.snapshot()
        p.close()
    assert pieces == whole


@heavy
@given(st.integers(1, 12), st.integers(0, 2**16))
def test_partitioned_runs_give_the_single_run_outputs(n: int, seed: int) -> None:
    records = make_inputs(500, rooms=7, seed=seed)
    by_partition: dict[int, PartitionPipeline] = {}
    got: Counter[bytes] = Counter()
    for e in _events(records):
        p = partition_of(e.data["room"], n)
        pipe = by_partition.setdefault(p, PartitionPipeline(pipeline))
        got.update(canonical(v) for v in pipe.feed(e))
    assert got == oracle(records)


@given(
    st.integers(0, 120),
    st.integers(0, 60),
    st.integers(4, 40),
    st.lists(st.integers(1, 50), min_size=1, max_size=8),
)
def test_a_bounded_inbox_delivers_every_event_once_in_order(
    stored: int, live: int, high: int, takes: list[int]
) -> None:
    """Past ``high`` queued events the inbox unsubscribes, and later resumes after the
    last event it kept: nothing lost, nothing twice, order kept (replay, then live)."""

    async def run() -> list[Any]:
        broker = MemoryBroker()
        for i in range(stored):
            broker.publish("in.x", Event.create(i))
        start = Position(broker.epoch, 0)
        inbox = Inbox(broker, "in.>", start, high=high)
        got: list[Any] = []
        for i in range(live):
            broker.publish("in.y", Event.create(stored + i))
        n = 0
        while len(got) < stored + live and n < 10_000:
            got += [e.data for e in await inbox.take(takes[n % len(takes)], 0.01)]
            n += 1
        inbox.close()
        return got

    assert asyncio.run(run()) == list(range(stored + live))


def test_the_worker_command_takes_the_keyed_options() -> None:
    from adapters.brokers.worker import parser
    from adapters.cli import build_parser

    argv = ["worker", "app:p", "--broker", "nats://h:4222", "--group", "g", "--key", "data.room"]
    argv += ["--partitions", "16", "--to", "out.c", "--checkpoint-every", "500", "--lease", "3"]
    for args in (build_parser().parse_args(argv), parser().parse_args(argv[1:])):
        assert (args.key, args.partitions, args.to) == ("data.room", 16, "out.c")
        assert (args.checkpoint_every, args.lease) == (500, 3.0)
    plain = build_parser().parse_args(["worker", "app:p", "--broker", "redis://h:6379/0"])
    assert plain.partitions is None and plain.key is None  # a stateless group, as before

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator

import orjson
import pytest
import reactivex
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from streams import (
    Event,
    NdjsonError,
    Overflow,
    from_async_iterable,
    from_iterable,
    from_ndjson,
    interval,
    synthetic,
    to_async_iterator,
    write_ndjson,
)


def collect(obs: reactivex.Observable) -> tuple[list, list, bool]:
    items: list = []
    errors: list = []
    done: list = []
    obs.subscribe(items.append, errors.append, lambda: done.append(True))
    return items, errors, bool(done)


@given(st.lists(st.integers()))
def test_from_iterable_matches_reactivex(xs: list[int]):
    assert collect(from_iterable(xs)) == collect(reactivex.from_iterable(xs))


def test_from_iterable_stops_an_endless_source_when_downstream_is_done():
    items, _, done = collect(from_iterable(itertools.count()).pipe(ops.take(3)))
    assert items == [0, 1, 2] and done


def test_from_iterable_reports_iterator_errors():
    def gen():
        yield 1
        raise ValueError("bad")

    items, errors, done = collect(from_iterable(gen()))
    assert items == [1] and isinstance(errors[0], ValueError) and not done


def test_from_ndjson_error_names_the_line(tmp_path):
    path = tmp_path / "x.ndjson"
    path.write_bytes(b'{"a":1}\n\n{"a":2}\n{oops\n{"a":4}\n')
    items, errors, _ = collect(from_ndjson(path))
    assert items == [{"a": 1}, {"a": 2}]
    assert isinstance(errors[0], NdjsonError) and errors[0].line == 4
    # a file source is cold: subscribing again reads again
    assert collect(from_ndjson(str(path)))[0] == items


def test_from_ndjson_events_validates_each_line():
    good = Event.create(1).encode()
    items, errors, _ = collect(from_ndjson(good + b"\n" + b'{"id": "x"}\n', events=True))
    assert items[0].data == 1
    assert errors[0].line == 2 and "specversion" in str(errors[0])


def test_from_ndjson_file_object():
    items, _, done = collect(from_ndjson(io.BytesIO(b"1\n2\n")))
    assert items == [1, 2] and done


@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20), st.lists(st.integers(1, 7), min_size=1)
)
async def test_async_ndjson_is_independent_of_chunking(values: list[int], cuts: list[int]):
    raw = b"".join(orjson.dumps(v) + b"\n" for v in values)

    async def chunks() -> AsyncIterator[bytes]:
        i = 0
        for c in itertools.cycle(cuts):
            if i >= len(raw):
                return
            yield raw[i : i + c]
            i += c

    got: list[int] = []
    done = asyncio.get_running_loop().create_future()
    from_ndjson(chunks()).subscribe(got.append, done.set_exception, lambda: done.set_result(1))
    await done
    assert got == values


async def test_from_async_iterable_dispose_cancels():
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[int]:
        yield 1
        await gate.wait()
        yield 2

    got: list[int] = []
    d = from_async_iterable(slow()).subscribe(got.append)
    await asyncio.sleep(0.01)
    d.dispose()
    gate.set()
    await asyncio.sleep(0.01)
    assert got == [1]


def test_interval_on_virtual_time():
    scheduler = TestScheduler()
    res = scheduler.start(lambda: interval(10.0).pipe(ops.take(3)), created=0, subscribed=0)
    # TestScheduler time is in ticks; reactivex converts seconds with the scheduler
    assert [m.value.value for m in res.messages if m.value.kind == "N"] == [0, 1, 2]
    assert res.messages[-1].value.kind == "C"


def test_synthetic_is_reproducible():
    a = [e.data for e in collect(synthetic("chat", seed=3, count=20))[0]]
    b = [e.data for e in collect(synthetic("chat", seed=3, count=20))[0]]
    assert a == b and len(a) == 20
    with pytest.raises(ValueError):
        synthetic("nope", count=1)


async def test_to_async_iterator_and_overflow():
    got = []
    async with to_async_iterator(from_iterable(range(5))) as it:
        async for x in it:
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
    it = to_async_iterator(from_iterable(range(50)), max_items=10)
    with pytest.raises(Overflow):
        async for _ in it:
            pass
    it2 = to_async_iterator(from_iterable(range(50)), max_items=10, policy="drop_oldest")
    assert [x async for x in it2] == list(range(40, 50)) and it2.dropped == 40


async def test_write_ndjson_reuses_event_bytes():
    events = [Event.create(i) for i in range(3)]
    out = io.BytesIO()
    assert await write_ndjson(from_iterable([*events, {"plain": True}]), out) == 4
    lines = out.getvalue().splitlines()
    assert lines[:3] == [e.encode() for e in events]
    assert orjson.loads(lines[3]) == {"plain": True}


def test_reactivetest_constants_available():
    assert ReactiveTest.subscribed == 200

"""The client sources against the real server on 127.0.0.1: delivery, a server restart
mid-stream (nothing missing, nothing duplicated), gaps, errors and clean disposal."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from reactivex import Observable

from adapters.client import (
    Backoff,
    ConnectionLost,
    GapNotice,
    ServerError,
    ndjson_source,
    publish,
    sse_source,
    websocket_source,
)
from streams import Event, MemoryBroker, Position, Retention

from .live import Collector, LiveServer, until

Make = Callable[..., Observable[Event]]


def sse(srv: LiveServer, pattern: str, since: Position | None, **kw: object) -> Observable[Event]:
    return sse_source(f"{srv.http}/events/{pattern}", since, **kw)  # type: ignore[arg-type]


def ndjson(
    srv: LiveServer, pattern: str, since: Position | None, **kw: object
) -> Observable[Event]:
    return ndjson_source(f"{srv.http}/events/{pattern}", since, **kw)  # type: ignore[arg-type]


def ws(srv: LiveServer, pattern: str, since: Position | None, **kw: object) -> Observable[Event]:
    return websocket_source(srv.ws, pattern, since, **kw)  # type: ignore[arg-type]


SOURCES = pytest.mark.parametrize("make", [sse, ndjson, ws], ids=["sse", "ndjson", "ws"])


@SOURCES
async def test_source_receives_published_events(make: Make, server: LiveServer) -> None:
    # Subscribing "since" a known position makes delivery independent of connect timing.
    (start,) = await publish(server.http, "chat.lobby.msg", {"n": 0})
    got = Collector()
    d = make(server, "chat.>", start).subscribe(got.on_next, got.on_error)
    try:
        await publish(server.http, "chat.lobby.msg", events=[{"n": i} for i in range(1, 4)])
        await publish(server.http, "other.topic", {"n": 99})
        await publish(server.http, "chat.room2.msg", {"n": 4})
        await got.wait_for(lambda: len(got.events) >= 4)
    finally:
        d.dispose()
    assert got.errors == []
    assert got.data == [{"n": i} for i in range(1, 5)]
    assert [e.subject for e in got.events] == ["chat.lobby.msg"] * 3 + ["chat.room2.msg"]


@SOURCES
async def test_server_restart_mid_stream_loses_and_repeats_nothing(
    make: Make, server: LiveServer, fast_backoff: Backoff
) -> None:
    (start,) = await publish(server.http, "feed.a", {"n": 0})
    got = Collector()
    d = make(server, "feed.>", start, backoff=fast_backoff).subscribe(got.on_next, got.on_error)
    try:
        await publish(server.http, "feed.a", events=[{"n": i} for i in range(1, 6)])
        await got.wait_for(lambda: len(got.events) >= 5)
        await server.stop()
        # published while no server is listening: the clients must fetch these on resume
        for i in range(6, 11):
            server.broker.publish("feed.b", {"n": i})
        await server.start()
        await publish(server.http, "feed.a", events=[{"n": i} for i in range(11, 16)])
        await got.wait_for(lambda: len(got.events) >= 15)
        # a second restart while events keep flowing
        await server.restart()
        await publish(server.http, "feed.c", events=[{"n": i} for i in range(16, 21)])
        await got.wait_for(lambda: len(got.events) >= 20)
    finally:
        d.dispose()
    assert got.errors == []
    assert got.data == [{"n": i} for i in range(1, 21)]
    offsets = [Position.parse(e.sequence or "").offset for e in got.events]
    assert offsets == sorted(set(offsets))


@SOURCES
async def test_resume_older_than_history_reports_a_gap_and_continues(make: Make) -> None:
    srv = LiveServer(MemoryBroker(Retention(max_events=3, max_per_subject=None)))
    await srv.start()
    try:
        first = srv.broker.publish("g.x", {"n": 1})
        for i in range(2, 8):
            srv.broker.publish("g.x", {"n": i})
        gaps: list[GapNotice] = []
        got = Collector()
        d = make(srv, "g.>", first, on_gap=gaps.append).subscribe(got.on_next, got.on_error)
        try:
            await got.wait_for(lambda: len(got.events) >= 3)
            srv.broker.publish("g.x", {"n": 8})
            await got.wait_for(lambda: len(got.events) >= 4)
        finally:
            d.dispose()
    finally:
        await srv.stop()
    assert got.errors == []
    assert len(gaps) == 1
    assert gaps[0].requested == str(first)
    assert gaps[0].earliest == f"{first.epoch}-5"
    assert got.data == [{"n": i} for i in range(5, 9)]


@SOURCES
async def test_bad_pattern_fails_the_stream_with_the_servers_error(
    make: Make, server: LiveServer
) -> None:
    got = Collector()
    d = make(server, "chat..bad", None).subscribe(got.on_next, got.on_error)
    try:
        await got.wait_for(lambda: bool(got.errors))
    finally:
        d.dispose()
    (err,) = got.errors
    assert isinstance(err, ServerError)
    assert err.code == "bad_subject"
    assert got.events == []


@SOURCES
async def test_dispose_closes_the_connection(make: Make, server: LiveServer) -> None:
    (start,) = await publish(server.http, "d.x", {"n": 0})
    got = Collector()
    d = make(server, "d.>", start).subscribe(got.on_next, got.on_error)
    await publish(server.http, "d.x", {"n": 1})
    await got.wait_for(lambda: len(got.events) >= 1)
    assert server.broker.subscriber_count == 1
    d.dispose()

    def gone() -> bool:
        # the server notices a closed socket when it next writes to it
        server.broker.publish("d.x", {"n": 2})
        return server.broker.subscriber_count == 0

    await until(gone)
    assert got.data == [{"n": 1}] and got.errors == []


@SOURCES
async def test_gives_up_after_max_attempts_when_nothing_listens(make: Make) -> None:
    srv = LiveServer(MemoryBroker())
    await srv.start()
    await srv.stop()  # the port is now closed
    got = Collector()
    policy = Backoff(initial=0.001, maximum=0.01, max_attempts=3, seed=1)
    d = make(srv, "x.>", None, backoff=policy).subscribe(got.on_next, got.on_error)
    try:
        await got.wait_for(lambda: bool(got.errors))
    finally:
        d.dispose()
    (err,) = got.errors
    assert isinstance(err, ConnectionLost)
    assert "3 failed attempts" in str(err)
    assert isinstance(err.__cause__, OSError)


async def test_subscribing_outside_a_loop_is_a_clear_error() -> None:
    import asyncio

    def outside() -> None:
        sse_source("http://127.0.0.1:9/events/x").subscribe()

    with pytest.raises(RuntimeError, match="asyncio loop"):
        await asyncio.to_thread(outside)


async def test_client_shares_one_session_for_publishing_and_streams(server: LiveServer) -> None:
    from adapters.client import Client, PublishRefused

    async with Client(server.http) as client:
        (start,) = await client.publish("c.x", {"n": 0})
        sse_got, ws_got = Collector(), Collector()
        d1 = client.events("c.>", start).subscribe(sse_got.on_next, sse_got.on_error)
        d2 = client.websocket("c.>", start).subscribe(ws_got.on_next, ws_got.on_error)
        try:
            await client.publish("c.x", events=[{"n": 1}, {"n": 2}])
            bad = [b'{"n": 3}', b"", b'{"n": 4}', b"{broken", b'{"n": 5}']
            with pytest.raises(PublishRefused) as info:
                await client.publish_ndjson("c.x", bad, max_lines=2)
            await sse_got.wait_for(lambda: len(sse_got.events) >= 4)
            await ws_got.wait_for(lambda: len(ws_got.events) >= 4)
        finally:
            d1.dispose()
            d2.dispose()
    err = info.value
    assert (err.code, err.accepted, err.body.get("line")) == ("bad_json", 2, 4)
    assert err.message.startswith("line 4: ")
    for got in (sse_got, ws_got):
        assert got.errors == []
        assert got.data == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]


async def test_a_failing_subscriber_ends_only_its_own_stream(server: LiveServer) -> None:
    (start,) = await publish(server.http, "f.x", {"n": 0})
    bad, good = Collector(), Collector()

    def explode(e: Event) -> None:
        raise ValueError(f"consumer bug on {e.data}")

    d1 = sse(server, "f.>", start).subscribe(explode, bad.on_error)
    d2 = sse(server, "f.>", start).subscribe(good.on_next, good.on_error)
    try:
        await publish(server.http, "f.x", events=[{"n": 1}, {"n": 2}])
        await bad.wait_for(lambda: bool(bad.errors))
        await good.wait_for(lambda: len(good.events) >= 2)
    finally:
        d1.dispose()
        d2.dispose()
    assert [str(e) for e in bad.errors] == ["consumer bug on {'n': 1}"]
    assert good.data == [{"n": 1}, {"n": 2}] and good.errors == []

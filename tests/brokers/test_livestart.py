"""Pins of live subscriptions, without sockets: a publish that began after subscribe() is
never skipped, whatever order its acknowledgement and the task's read arrive in."""

from __future__ import annotations

import asyncio

from adapters.brokers.livestart import LiveStarts
from streams import Position


def test_no_publish_means_the_start_is_what_the_server_said() -> None:
    starts = LiveStarts()
    pin = starts.pin()
    assert pin.resolve(Position("e", 5)) == Position("e", 5)


def test_publishes_before_the_pin_or_after_it_closed_are_not_counted() -> None:
    starts = LiveStarts()
    with starts.publishing() as note:
        pin = starts.pin()  # the publish began before subscribe(): not counted
        note([Position("e", 3)])
    pin.close()
    with starts.publishing() as note:
        note([Position("e", 4)])
    assert pin.resolve(Position("e", 9)) == Position("e", 9)
    assert len(starts) == 0


async def test_start_waits_for_a_counted_publish_acknowledged_after_the_read() -> None:
    starts = LiveStarts()
    pin = starts.pin()
    acknowledged = asyncio.Event()

    async def publish() -> None:
        with starts.publishing() as note:
            await acknowledged.wait()  # stored before the read below, acknowledged after
            note([Position("e", 7)])

    publisher = asyncio.create_task(publish())
    await asyncio.sleep(0)  # the publish has begun
    start = asyncio.create_task(pin.start(Position("e", 7)))
    await asyncio.sleep(0)
    assert not start.done()  # the position of the counted publish is not known yet
    acknowledged.set()
    assert await start == Position("e", 6)
    await publisher


async def test_a_failed_counted_publish_releases_the_start() -> None:
    starts = LiveStarts()
    pin = starts.pin()
    failed = asyncio.Event()

    async def publish() -> None:
        with starts.publishing():
            await failed.wait()
            raise ConnectionError("no answer")

    publisher = asyncio.create_task(publish())
    await asyncio.sleep(0)
    start = asyncio.create_task(pin.start(Position("e", 4)))
    failed.set()
    assert await start == Position("e", 4)
    assert isinstance(publisher.exception(), ConnectionError)


def test_the_lowest_offset_of_the_epoch_read_wins() -> None:
    starts = LiveStarts()
    pin = starts.pin()
    with starts.publishing() as note:
        note([Position("e", 12), Position("e", 13)])
    with starts.publishing() as note:
        note([Position("e", 10)])
    with starts.publishing() as note:
        note([Position("old", 1)])
    assert pin.resolve(Position("e", 20)) == Position("e", 9)
    assert pin.resolve(Position("e", 5)) == Position("e", 5)  # never after what was read

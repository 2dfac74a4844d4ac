"""Binary data (``data_base64``, the CloudEvents JSON format's binary form) round-trips
through every broker unchanged, not as an external event (issue 11, item 8)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from streams import Event, Position

from .conftest import Collector


async def test_data_base64_round_trips_through_every_broker(
    make_broker: Callable[..., Any],
) -> None:
    broker = make_broker()
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    sent = Event.from_dict(
        {
            "specversion": "1.0",
            "id": "img-1",
            "source": "camera",
            "type": "image.taken",
            "datacontenttype": "image/png",
            "data_base64": png,
        }
    )
    pos = await broker.apublish("bin.img", sent)
    got = await Collector(broker.subscribe("bin.>", since=Position(pos.epoch, 0))).count(1)
    received = got[0].to_dict()
    assert (received["id"], received["type"], received["source"]) == (
        "img-1",
        "image.taken",
        "camera",
    )
    assert received["data_base64"] == png
    assert received["datacontenttype"] == "image/png"


def test_data_base64_must_be_a_string() -> None:
    import pytest

    from streams import EventError

    with pytest.raises(EventError, match="data_base64"):
        Event.from_dict(
            {"specversion": "1.0", "id": "a", "source": "s", "type": "t", "data_base64": 5}
        )

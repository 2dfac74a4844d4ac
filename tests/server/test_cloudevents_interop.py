"""The CloudEvents HTTP protocol binding with the official SDK (issue 11, item 8), over real
sockets: binary mode (``ce-*`` headers, the body of any content type as data) and
structured mode with ``data_base64`` keep every attribute and the data, as the SDK reads
the events back from ``GET /poll`` and ``GET /events``."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from .conftest import Server

FMT = JSONFormat()

SAMPLES: list[tuple[dict[str, Any], Any]] = [
    (
        {"type": "com.example.order.paid", "source": "https://billing.example.com",
         "id": "order-17", "datacontenttype": "application/json",
         "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "traceparent": "00-abc-01"},
        {"order": 17, "items": [1, 2], "note": "ünïcode"},
    ),
    (
        {"type": "com.example.note", "source": "/notes", "id": "n-1",
         "datacontenttype": "text/plain"},
        "hello wörld",
    ),
    (
        {"type": "com.example.blob", "source": "/blobs", "id": "b-1",
         "datacontenttype": "application/octet-stream"},
        bytes(range(256)),
    ),
    (
        {"type": "com.example.png", "source": "/img", "id": "p-1",
         "datacontenttype": "image/png"},
        b"\x89PNG\r\n\x1a\n\x00\x00",
    ),
]  # fmt: skip


def same(sent: CloudEvent, got: CloudEvent) -> None:
    want = {k: v for k, v in sent.get_attributes().items() if k != "subject"}
    have = {k: v for k, v in got.get_attributes().items() if k not in ("subject", "sequence")}
    assert have == want
    assert got.get_data() == sent.get_data()
    assert got.get_attributes()["subject"] == "ce.in"


async def read_back(server: Server, session: aiohttp.ClientSession) -> list[CloudEvent]:
    async with session.get(server.url + f"/poll/ce.>?after={server.broker.epoch}-0") as r:
        assert r.status == 200
        return [FMT.read(None, orjson.dumps(obj)) for obj in await r.json()]


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_sdk_events_round_trip_in_both_content_modes(
    server: Server, session: aiohttp.ClientSession, mode: str
) -> None:
    sent = [CloudEvent(attributes=attrs, data=data) for attrs, data in SAMPLES]
    for event in sent:
        message = (to_binary if mode == "binary" else to_structured)(event, FMT)
        async with session.post(
            server.url + "/events/ce.in", data=message.body, headers=message.headers
        ) as r:
            assert r.status == 202, await r.text()
    got = await read_back(server, session)
    assert len(got) == len(sent)
    for s, g in zip(sent, got, strict=True):
        same(s, g)
    # the SSE stream carries the same JSON
    async with session.get(server.url + f"/events/ce.>?last_event_id={server.broker.epoch}-0") as r:
        buf = b""
        while buf.count(b"\n\n") < 1 + len(sent):  # retry: line, then the events
            buf += await r.content.readany()
    datas = [line[6:] for line in buf.split(b"\n") if line.startswith(b"data: ")]
    for s, raw in zip(sent, datas, strict=True):
        same(s, FMT.read(None, raw))


async def test_binary_mode_errors_answer_json(
    server: Server, session: aiohttp.ClientSession
) -> None:
    base = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}
    cases: list[tuple[dict[str, str], bytes, int, str]] = [
        ({**base, "ce-specversion": "0.3"}, b"{}", 400, "bad_event"),
        ({k: v for k, v in base.items() if k != "ce-id"}, b"{}", 400, "bad_event"),
        ({**base, "Content-Type": "application/json"}, b"{", 400, "bad_json"),
        ({**base, "ce-time": "yesterday"}, b"", 400, "bad_event"),
        ({**base, "ce-Bad_Name": "x"}, b"", 400, "bad_event"),
        ({**base, "ce-data": "x"}, b"", 400, "bad_event"),
    ]
    for headers, body, status, code in cases:
        async with session.post(server.url + "/events/ce.in", data=body, headers=headers) as r:
            assert r.status == status, headers
            assert (await r.json())["error"]["code"] == code
    structured = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    for extra in ({"data_base64": "!!"}, {"data_base64": 7}, {"data_base64": "AA==", "data": 1}):
        async with session.post(
            server.url + "/events/ce.in",
            data=orjson.dumps({**structured, **extra}),
            headers={"Content-Type": "application/cloudevents+json"},
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["field"] == "data_base64"
    assert list(server.broker.history("ce.>")) == []
    # a null attribute is an absent one (found by the fuzz: data_base64 null was refused)
    async with session.post(
        server.url + "/events/ce.null",
        data=orjson.dumps({**structured, "data_base64": None, "time": None}),
        headers={"Content-Type": "application/cloudevents+json"},
    ) as r:
        assert r.status == 202
    # an empty body is an event without data
    async with session.post(server.url + "/events/ce.in", data=b"", headers=base) as r:
        assert r.status == 202
    nulls, got = await read_back(server, session)
    assert nulls.get_attributes()["subject"] == "ce.null"
    assert got.get_data() is None and got.get_id() == "1"


async def test_rxstreams_client_sources_read_binary_data(
    server: Server, session: aiohttp.ClientSession
) -> None:
    from adapters.client import first_events, sse_source, websocket_source

    attrs, data = SAMPLES[2]
    message = to_binary(CloudEvent(attributes=attrs, data=data), FMT)
    async with session.post(
        server.url + "/events/ce.in", data=message.body, headers=message.headers
    ) as r:
        assert r.status == 202
    since = f"{server.broker.epoch}-0"
    for source in (
        sse_source(server.url + "/events/ce.>", since),
        websocket_source(server.ws_url(), "ce.>", since),
    ):
        (event,) = await first_events(source, 1)
        assert event.id == "b-1" and event.extensions is not None
        assert base64.b64decode(event.extensions["data_base64"]) == data

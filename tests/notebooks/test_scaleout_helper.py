"""Notebook 04 leads with its story; the plumbing lives in ``adapters.notebook.scaleout``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nbformat

from adapters.notebook.scaleout import START_HINT, brokers_here, fresh, until_live

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "04_scale_out.ipynb"


def test_notebook_04_leads_with_the_story_not_the_plumbing() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    intro, first_code = nb.cells[0], next(c for c in nb.cells if c.cell_type == "code")
    assert "publish to server A, and a reader of server B sees every" in intro.source
    assert len(first_code.source.splitlines()) <= 10  # imports and one call, not 40 lines
    assert "brokers_here()" in first_code.source
    everything = "\n".join(c.source for c in nb.cells)
    for plumbing in ("open_connection", "AppRunner", "uuid", ".drop()"):
        assert plumbing not in everything, plumbing


async def test_no_broker_means_no_urls_and_a_hint_naming_what_to_start() -> None:
    said: list[str] = []
    found = await brokers_here("nats://127.0.0.1:9", "redis://127.0.0.1:9/0", say=said.append)
    assert found == [] and said == [START_HINT]
    assert "nats-server -js -a 127.0.0.1 -p 4222" in START_HINT


async def test_a_server_speaking_the_wrong_protocol_is_not_a_broker() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"redis://127.0.0.1:{port}/0"
        assert await brokers_here(f"nats://127.0.0.1:{port}", url, say=None) == []
    finally:
        server.close()
        await server.wait_closed()


def test_every_run_gets_a_fresh_stream() -> None:
    a, b = fresh("nats://127.0.0.1:4222"), fresh("nats://127.0.0.1:4222")
    assert a != b and a.startswith("nats://127.0.0.1:4222?stream=nb04-")


async def test_until_live_probes_until_the_view_sees_an_event() -> None:
    class View:
        count = 0

        async def until(self, n: int, timeout: float) -> None:
            await asyncio.sleep(0)

    view = View()

    async def probe() -> None:
        view.count += probes.append(1) or (1 if len(probes) == 3 else 0)

    probes: list[int] = []
    assert await until_live(view, probe, every=0.01) == 3

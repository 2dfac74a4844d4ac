"""Fails loudly when aiohttp changes something the server relies on.

aiohttp's major version is pinned (``aiohttp>=3.9,<4`` in pyproject.toml). The delivery
shells use only public API: ``request.transport``, ``request.protocol.writing_paused``,
``request.writer.drain()``, and the ``Transfer-Encoding`` header of a prepared response.
One private detail remains, in :mod:`adapters.server.disconnect`: aiohttp 3 has no public
hook for "the peer of this bodyless request went away", so it swaps the request's
``_payload`` (the shared ``EMPTY_PAYLOAD``) for a reader that reports the loss. If any of
this moves, these tests say what and where, instead of streams silently hanging.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import EMPTY_PAYLOAD, EmptyStreamReader

import adapters.server as server_pkg


def test_aiohttp_major_version_is_the_pinned_one() -> None:
    major = int(aiohttp.__version__.split(".")[0])
    assert major == 3, (
        f"aiohttp {aiohttp.__version__}: adapters/server is written against aiohttp 3 "
        "(see this module's docstring); check every item below before moving the pin"
    )


def test_public_flow_control_the_delivery_shells_use() -> None:
    assert isinstance(inspect.getattr_static(BaseProtocol, "writing_paused"), property), (
        "BaseProtocol.writing_paused is gone: delivery.Subscriber.writing_paused reads it"
    )
    assert inspect.iscoroutinefunction(AbstractStreamWriter.drain), (
        "AbstractStreamWriter.drain is gone: delivery.Subscriber.drain awaits it"
    )
    for name in ("transport", "protocol", "writer", "method"):
        assert hasattr(web.BaseRequest, name), (
            f"web.BaseRequest.{name} is gone: delivery.Subscriber.__init__ reads it"
        )


def test_the_one_private_detail_disconnect_relies_on() -> None:
    assert isinstance(EMPTY_PAYLOAD, EmptyStreamReader)
    assert "_payload" in inspect.getsource(web.BaseRequest.__init__), (
        "BaseRequest._payload is gone: adapters/server/disconnect.py swaps it to notice a "
        "closed SSE/NDJSON connection at once"
    )
    assert hasattr(EmptyStreamReader, "set_exception")


def test_no_aiohttp_privates_in_the_delivery_shells() -> None:
    here = Path(server_pkg.__file__).parent
    for module in ("delivery.py", "client_queue.py", "framing.py"):
        text = (here / module).read_text()
        for private in ("._writer", "._paused", "_drain_helper", "._payload"):
            assert private not in text, f"{module} uses aiohttp's private {private}"

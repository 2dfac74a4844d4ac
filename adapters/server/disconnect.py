"""Notice a streaming client's disconnect as it happens, not at the next write.

aiohttp 3.14 does not cancel a handler when its peer goes away (unless the runner was made
with ``handler_cancellation=True``, which a mounted app cannot choose): an SSE handler
waiting for the next event would hold its broker subscription until it next writes,
up to a heartbeat period later. What aiohttp does do, from the protocol's
``connection_lost`` (and on server shutdown), is fail the current request's payload
reader. A bodyless GET shares the no-op ``EMPTY_PAYLOAD``; :func:`on_disconnect` gives
the request its own empty reader whose failure calls back.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, EmptyStreamReader

__all__ = ["on_disconnect"]


class _DisconnectSignal(EmptyStreamReader):
    """An empty request body (reads give EOF) that reports the connection's loss once."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__()
        self._callback: Callable[[], None] | None = callback

    def set_exception(self, exc: BaseException, exc_cause: BaseException | None = None) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def on_disconnect(request: web.BaseRequest, callback: Callable[[], None]) -> bool:
    """Call ``callback`` once, as soon as ``request``'s connection is lost.

    Only for requests without a body (the streaming GETs); returns False, and does
    nothing, for others. The callback runs inside aiohttp's ``connection_lost``: keep it
    short and synchronous.

    >>> async def handler(request):  # doctest: +SKIP
    ...     gone = asyncio.Event()
    ...     on_disconnect(request, gone.set)
    ...     await gone.wait()  # returns as soon as the client closes its socket
    """
    if request._payload is not EMPTY_PAYLOAD:
        return False
    request._payload = _DisconnectSignal(callback)
    return True

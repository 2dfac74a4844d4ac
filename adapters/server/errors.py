"""Protocol errors: one exception carrying the documented code, HTTP status and details.

Every sans-I/O module raises :class:`ProtocolError`; the aiohttp shell turns it into a
JSON error body (HTTP) or an ``{"op": "error"}`` message (WebSocket). Codes and statuses
are the table in ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import math
from typing import Any, Final

import orjson

from streams.errors import RxStreamsError

__all__ = ["STATUS", "ProtocolError"]

STATUS: Final[dict[str, int]] = {
    "bad_json": 400,
    "bad_event": 400,
    "bad_subject": 400,
    "bad_position": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "gap": 410,
    "too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "too_many_subscriptions": 400,
    "unknown_op": 400,
    "not_subscribed": 400,
    "overloaded": 503,
    "unavailable": 503,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "token_expired": 401,
    "internal": 500,
}


class ProtocolError(RxStreamsError):
    """A documented protocol error, answered to the client (the server's side of the wire;
    a client that receives one raises :class:`adapters.client.ServerError`).

    ``retry_after`` (seconds, for ``rate_limited``, ``overloaded`` and ``unavailable``) is
    sent as the ``Retry-After`` header, rounded up to whole seconds, and as ``retry_after``
    in the body.

    >>> e = ProtocolError("bad_json", "line 3: malformed JSON", line=3)
    >>> e.status, e.body()
    (400, b'{"error":{"code":"bad_json","message":"line 3: malformed JSON","line":3}}')
    >>> ProtocolError("rate_limited", "slow down", retry_after=0.25).headers()
    {'Retry-After': '1'}
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        ref: str | None = None,
        retry_after: float | None = None,
        **details: Any,
    ) -> None:
        if code not in STATUS:
            raise ValueError(f"undocumented error code {code!r}")
        super().__init__(message)
        self.ref = ref
        self.code = code
        self.message = message
        self.retry_after = retry_after
        if retry_after is not None:
            details["retry_after"] = round(retry_after, 3)
        self.details = details

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers: ``Retry-After`` in whole seconds (at least 1) when known."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def body(self) -> bytes:
        """The HTTP error body."""
        return orjson.dumps({"error": self.as_dict()})

    def ws_message(self, ref: str | None = None) -> bytes:
        """The WebSocket ``error`` op, echoing ``ref`` when it answers a client message.

        >>> ProtocolError("unknown_op", "op 'x' is not known").ws_message("r1")
        b'{"op":"error","code":"unknown_op","message":"op \\'x\\' is not known","ref":"r1"}'
        """
        msg: dict[str, Any] = {"op": "error", **self.as_dict()}
        ref = ref if ref is not None else self.ref
        if ref is not None:
            msg["ref"] = ref
        return orjson.dumps(msg)

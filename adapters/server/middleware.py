"""Every HTTP error the app answers is the JSON error object of ``docs/PROTOCOL.md``.

Handlers answer their own :class:`~.errors.ProtocolError`\\ s; this middleware covers the
rest: aiohttp's ``404``/``405`` (and any other ``HTTPException`` with an error status),
a :class:`~.errors.ProtocolError` raised instead of returned, and an unexpected exception
(``500 internal``, logged with its traceback, never shown to the client). Errors aiohttp
answers before a request reaches the app (a request it cannot parse, a header timeout)
are turned into JSON by :mod:`adapters.server.serving`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from .errors import ProtocolError

__all__ = ["error_for_status", "json_errors"]

log = logging.getLogger(__name__)

#: Codes for the statuses aiohttp itself raises (the rest map to ``bad_request``/``internal``).
_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "overloaded",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_for_status(status: int, message: str) -> ProtocolError:
    """The documented error for an HTTP ``status`` aiohttp chose.

    >>> e = error_for_status(404, "Not Found")
    >>> e.code, e.status, e.body()
    ('not_found', 404, b'{"error":{"code":"not_found","message":"Not Found"}}')
    >>> error_for_status(431, "Request Header Fields Too Large").code
    'bad_request'
    """
    code = _CODES.get(status) or ("internal" if status >= 500 else "bad_request")
    return ProtocolError(code, message)


def _response(exc: ProtocolError, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=exc.status,
        body=exc.body(),
        content_type="application/json",
        headers={**(headers or {}), **exc.headers()},
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error of the app as ``{"error": {"code": ..., "message": ...}}``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        err = error_for_status(exc.status, exc.reason)
        keep = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return _response(err, keep)
    except ProtocolError as exc:
        return _response(exc)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return _response(ProtocolError("internal", "internal server error"))

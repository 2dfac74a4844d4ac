"""Client side of the rxstreams wire protocol: observables over remote SSE, NDJSON and
WebSocket endpoints that reconnect and resume, a publish helper, and the parsers they
are built on (sans-I/O, usable with any transport).

Every error here derives from :class:`streams.errors.ClientError` (the tree is in
:mod:`streams.errors`). ``PublishError`` and ``ProtocolError`` are deprecated names of
:class:`PublishRefused` and :class:`RemoteProtocolError`.
"""

from typing import Any

from streams.errors import ClientError, deprecated_alias

from .backoff import Backoff
from .ndjson import LineSplitter, LineTooLong, ndjson_chunks
from .protocol import (
    Control,
    GapNotice,
    RemoteProtocolError,
    ResumeTracker,
    ServerError,
    decode_ndjson_line,
    decode_sse_message,
    decode_ws_message,
    subscribe_message,
)
from .publish import Client, PublishRefused, PublishResult, events_url, publish, publish_ndjson
from .sources import (
    ConnectionLost,
    OnGap,
    first_events,
    ndjson_source,
    sse_source,
    websocket_source,
)
from .sse import SseMessage, SseParser, SseTooLarge, encode_sse

__all__ = [
    "Backoff",
    "Client",
    "ClientError",
    "ConnectionLost",
    "Control",
    "GapNotice",
    "LineSplitter",
    "LineTooLong",
    "OnGap",
    "PublishRefused",
    "PublishResult",
    "RemoteProtocolError",
    "ResumeTracker",
    "ServerError",
    "SseMessage",
    "SseParser",
    "SseTooLarge",
    "decode_ndjson_line",
    "decode_sse_message",
    "decode_ws_message",
    "encode_sse",
    "events_url",
    "first_events",
    "ndjson_chunks",
    "ndjson_source",
    "publish",
    "publish_ndjson",
    "sse_source",
    "subscribe_message",
    "websocket_source",
]

_DEPRECATED = {"PublishError": PublishRefused, "ProtocolError": RemoteProtocolError}


def __getattr__(name: str) -> Any:
    """The deprecated names, importable still, with a :class:`DeprecationWarning`."""
    if name in _DEPRECATED:
        return deprecated_alias(__name__, name, _DEPRECATED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

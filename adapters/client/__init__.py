"""Client side of the rxstreams wire protocol: observables over remote SSE, NDJSON and
WebSocket endpoints that reconnect and resume, a publish helper, and the parsers they
are built on (sans-I/O, usable with any transport)."""

from .backoff import Backoff
from .ndjson import LineSplitter, LineTooLong, ndjson_chunks
from .protocol import (
    Control,
    GapNotice,
    ProtocolError,
    ResumeTracker,
    ServerError,
    decode_ndjson_line,
    decode_sse_message,
    decode_ws_message,
    subscribe_message,
)
from .publish import Client, PublishError, PublishResult, events_url, publish, publish_ndjson
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
    "ConnectionLost",
    "Control",
    "GapNotice",
    "LineSplitter",
    "LineTooLong",
    "OnGap",
    "ProtocolError",
    "PublishError",
    "PublishResult",
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

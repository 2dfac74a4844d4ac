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
from .sse import SseMessage, SseParser, SseTooLarge, encode_sse

__all__ = [
    "Backoff",
    "Control",
    "GapNotice",
    "LineSplitter",
    "LineTooLong",
    "ProtocolError",
    "ResumeTracker",
    "ServerError",
    "SseMessage",
    "SseParser",
    "SseTooLarge",
    "decode_ndjson_line",
    "decode_sse_message",
    "decode_ws_message",
    "encode_sse",
    "ndjson_chunks",
    "subscribe_message",
]

"""rxstreams core: the event model, subjects, brokers, buffers, sources and sinks.

>>> from streams import MemoryBroker
>>> broker = MemoryBroker()
>>> seen = []
>>> _ = broker.subscribe("chat.>").subscribe(lambda e: seen.append(e.data["text"]))
>>> _ = broker.publish("chat.lobby.msg", {"text": "hello"})
>>> seen
['hello']
"""

from .broker import (
    Broker,
    GapError,
    Position,
    PositionError,
    PublishError,
    Retention,
    resume_point,
)
from .buffer import AsyncBuffer, BoundedBuffer, Overflow, OverflowPolicy
from .errors import BrokerError, ClientError, InvalidInput, PipelineError, RxStreamsError
from .event import Event, EventError, decode_event, encode_events
from .memory import MemoryBroker
from .sinks import Subscription, to_async_iterator, write_ndjson
from .sources import (
    NdjsonError,
    from_async_iterable,
    from_iterable,
    from_ndjson,
    interval,
    parse_ndjson_lines,
)
from .subjects import (
    SubjectError,
    SubjectIndex,
    is_pattern,
    match,
    validate_pattern,
    validate_subject,
)
from .synthetic import chat_messages, sensor_readings, synthetic

__all__ = [
    "AsyncBuffer",
    "BoundedBuffer",
    "Broker",
    "BrokerError",
    "ClientError",
    "Event",
    "EventError",
    "GapError",
    "InvalidInput",
    "MemoryBroker",
    "NdjsonError",
    "Overflow",
    "OverflowPolicy",
    "PipelineError",
    "Position",
    "PositionError",
    "PublishError",
    "Retention",
    "RxStreamsError",
    "SubjectError",
    "SubjectIndex",
    "Subscription",
    "chat_messages",
    "decode_event",
    "encode_events",
    "from_async_iterable",
    "from_iterable",
    "from_ndjson",
    "interval",
    "is_pattern",
    "match",
    "parse_ndjson_lines",
    "resume_point",
    "sensor_readings",
    "synthetic",
    "to_async_iterator",
    "validate_pattern",
    "validate_subject",
    "write_ndjson",
]

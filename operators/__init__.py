"""Pipeable operators for rxstreams: filtering, batching, windows, routing, resilience, codec.

Every operator is a plain function returning ``Callable[[Observable[A]], Observable[B]]``
(routing operators return :class:`Branches`, a mapping of named outputs), so they mix with
``reactivex.operators`` in one ``.pipe(...)``. Adjacent rxstreams operators are fused into
one subscription with no per-hop wrapper; see :mod:`operators._core`. User functions follow
an error policy (``on_error="fail" | "skip" | dead-letter``). All operators assume one loop
or thread; time-based ones take ``scheduler=`` (default: the subscribe-time scheduler, else
the running asyncio loop's), so they are testable with ``reactivex.testing.TestScheduler``.

>>> import reactivex
>>> from reactivex import operators as ops
>>> reactivex.of(1, 2, 3, 4, 5).pipe(
...     where(lambda x: x % 2), ops.map(lambda x: x * 10), batch(count=2)
... ).subscribe(print)  # doctest: +ELLIPSIS
[10, 30]
[50]
<...>
"""

from . import instrument
from ._snapshot import SnapshotError
from .backoff import Backoff
from .basic import select, where
from .batching import batch, batch_by_key, encoded_size
from .codec import CodecError, encode_json, parse_json
from .filtering import by_subject, dedupe, field_match
from .joins import enrich, interval_join, join_window, lookup
from .policy import DeadLetter, OnError
from .ratelimit import RateLimitError, rate_limit
from .resilience import backoff_delays, retry
from .routing import (
    Branches,
    Group,
    UnroutableError,
    broadcast,
    group_by_key,
    partition,
    publish_to,
    route,
    route_when,
    stable_hash,
)
from .state import StageNameError, StageSetError
from .timing import debounce, sample, throttle
from .windows import (
    Late,
    Window,
    count_of,
    max_of,
    mean_of,
    min_of,
    session,
    sliding,
    sum_of,
    top_k,
    tumbling,
)

__all__ = [
    "Backoff",
    "Branches",
    "CodecError",
    "DeadLetter",
    "Group",
    "Late",
    "OnError",
    "RateLimitError",
    "SnapshotError",
    "StageNameError",
    "StageSetError",
    "UnroutableError",
    "Window",
    "backoff_delays",
    "batch",
    "batch_by_key",
    "broadcast",
    "by_subject",
    "count_of",
    "debounce",
    "dedupe",
    "encode_json",
    "encoded_size",
    "enrich",
    "field_match",
    "group_by_key",
    "instrument",
    "interval_join",
    "join_window",
    "lookup",
    "max_of",
    "mean_of",
    "min_of",
    "parse_json",
    "partition",
    "publish_to",
    "rate_limit",
    "retry",
    "route",
    "route_when",
    "sample",
    "select",
    "session",
    "sliding",
    "stable_hash",
    "sum_of",
    "throttle",
    "top_k",
    "tumbling",
    "where",
]

"""Every exception rxstreams raises on purpose, as one tree under :class:`RxStreamsError`.

``except RxStreamsError`` catches anything the toolkit refuses or reports, and nothing
else (a bug in a user's function propagates as itself). Each class also keeps the builtin
base callers caught before the tree existed (``ValueError``, ``LookupError``,
``RuntimeError``, ``ConnectionError``), so catching those still works. The categories are
defined here, at the lowest layer; each leaf lives beside the code that raises it, because it
carries that code's details (a position, a line number, an HTTP status)::

    RxStreamsError
    ├── InvalidInput (ValueError)        a value handed to rxstreams cannot be used
    │   ├── EventError                   streams.event: a malformed event or CloudEvent
    │   ├── SubjectError                 streams.subjects: a bad subject or pattern
    │   ├── PositionError                streams.broker: not "<epoch>-<offset>"
    │   ├── NdjsonError                  streams.sources: a bad NDJSON line (.line)
    │   ├── CodecError                   operators.codec: cannot decode or encode
    │   ├── SnapshotError                operators._snapshot: state that cannot be saved
    │   ├── StageNameError               operators.state: two stages with one name
    │   ├── StageSetError                operators.state: a snapshot of another pipeline
    │   ├── BrokerURLError               adapters.brokers: a --broker URL that cannot work
    │   ├── UnsupportedRetention         adapters.brokers: a limit Redis cannot enforce
    │   └── UsageError                   adapters.client: CLI arguments that cannot work
    ├── BrokerError                      a broker could not do what was asked
    │   ├── PublishError (RuntimeError)  not acknowledged; .committed lists what was stored
    │   ├── GapError                     history after .requested is gone; .resume_from
    │   ├── UnreadableEntry              adapters.brokers.foreign: a log entry skipped
    │   ├── Fenced                       adapters.brokers.leases: a newer owner holds it
    │   └── CheckpointTooLarge           adapters.brokers.leases: over the size limit
    ├── PipelineError                    an operator refused an event while running
    │   ├── UnroutableError (LookupError)  operators.routing: no branch matched
    │   ├── KeyMissing (LookupError)       adapters.brokers.partitions: no usable key
    │   ├── RateLimitError                 operators.ratelimit: the delay queue is full
    │   └── PipelineFailed                 adapters.brokers.stateful_worker: a unit failed
    ├── ProtocolError                    adapters.server: a documented wire error (.code,
    │                                    .status), sent to the client as JSON
    ├── ClientError                      adapters.client: talking to a server failed
    │   ├── ServerError                  the server answered an error (.status, .code)
    │   │   └── PublishRefused           an upload chunk was refused (.accepted, .last)
    │   ├── RemoteProtocolError (ValueError)  the server broke the protocol
    │   ├── LineTooLong (ValueError)     an NDJSON line past max_line
    │   ├── SseTooLarge (ValueError)     an SSE message past max_size
    │   └── ConnectionLost (ConnectionError)  reconnecting gave up; __cause__ says why
    └── CliError                         adapters.cli: one line on stderr, exit .status

Names that meant two things keep working as deprecated aliases: the client's
``adapters.client.PublishError`` is :class:`PublishRefused` and its ``ProtocolError`` is
:class:`RemoteProtocolError`; ``adapters.brokers.PublishError`` *is*
:class:`streams.PublishError`.

>>> import streams
>>> issubclass(streams.GapError, BrokerError), issubclass(streams.EventError, ValueError)
(True, True)
"""

from __future__ import annotations

import warnings
from typing import TypeVar

E = TypeVar("E", bound=type[BaseException])

__all__ = [
    "BrokerError",
    "ClientError",
    "InvalidInput",
    "PipelineError",
    "RxStreamsError",
]


class RxStreamsError(Exception):
    """The root: every exception rxstreams raises on purpose derives from it."""


class InvalidInput(RxStreamsError, ValueError):
    """A value handed to rxstreams (an event, a subject, a setting, a line of input) cannot
    be used; the message says what is wrong. A ``ValueError``, as it always was."""


class BrokerError(RxStreamsError):
    """A broker could not do what was asked: store a publish, or deliver complete history."""


class PipelineError(RxStreamsError):
    """An operator refused an event while the pipeline ran (no route, no key, no room)."""


class ClientError(RxStreamsError):
    """The HTTP/WebSocket client (``adapters.client``) could not get what it asked for."""


def deprecated_alias(module: str, old: str, new: E) -> E:
    """``new``, warning that ``module.old`` is its deprecated name (for a module
    ``__getattr__``, so that only code still using the old name sees the warning).

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     cls = deprecated_alias("pkg", "OldError", BrokerError)
    >>> cls is BrokerError, str(seen[0].message)
    (True, 'pkg.OldError is deprecated: use streams.errors.BrokerError')
    """
    warnings.warn(
        f"{module}.{old} is deprecated: use {new.__module__}.{new.__qualname__}",
        DeprecationWarning,
        stacklevel=3,
    )
    return new

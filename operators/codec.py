"""JSON codec operators built on orjson, with errors that say what was wrong.

``parse_json`` turns bytes/str into values (or :class:`streams.Event` with
``events=True``); a bad input raises :class:`CodecError` (a ``ValueError``) through the
``on_error`` policy, so ``on_error="skip"`` or a dead-letter keeps a live stream going.
``encode_json`` turns values into bytes, reusing an Event's cached encoding.
Both fuse with neighbouring rxstreams operators. Operators assume one loop or thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from reactivex import Observable

from streams.errors import InvalidInput

from ._core import PureSpec, lean
from .policy import OnError

__all__ = ["CodecError", "encode_json", "parse_json"]


class CodecError(InvalidInput):
    """Input that cannot be decoded or encoded; ``reason`` says why, ``sample`` shows it."""

    def __init__(self, reason: str, sample: Any) -> None:
        text = repr(sample)
        short = text if len(text) <= 60 else text[:57] + "..."
        super().__init__(f"{reason}: {short}")
        self.reason = reason
        self.sample = sample


def _loads(raw: Any) -> Any:
    if not isinstance(raw, bytes | bytearray | memoryview | str):
        raise CodecError(f"expected bytes or str, got {type(raw).__name__}", raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"malformed JSON ({exc})", raw) from None


def _load_event(raw: Any) -> Any:
    from streams import Event, EventError

    value = _loads(raw)
    try:
        return Event.from_dict(value)
    except EventError as exc:
        raise CodecError(f"not a CloudEvent ({exc})", raw) from None


def _dumps(value: Any) -> bytes:
    encode = getattr(value, "encode", None)
    if encode is not None and not isinstance(value, str):
        try:
            return bytes(encode())
        except ValueError as exc:
            raise CodecError(str(exc), value) from None
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise CodecError(f"not JSON-serializable ({exc})", value) from None


def parse_json(
    events: bool = False, *, on_error: OnError = "fail"
) -> Callable[[Observable[bytes | str]], Observable[Any]]:
    """Decode JSON text into values, or into :class:`streams.Event` with ``events=True``.

    >>> import reactivex
    >>> reactivex.of(b'{"a": 1}', b"{oops", b"[2]").pipe(
    ...     parse_json(on_error=lambda raw, exc: print("bad:", exc.reason[:14]))
    ... ).subscribe(print)  # doctest: +ELLIPSIS
    {'a': 1}
    bad: malformed JSON
    [2]
    <...>
    """
    return lean(PureSpec("map", _load_event if events else _loads, on_error))


def encode_json(*, on_error: OnError = "fail") -> Callable[[Observable[Any]], Observable[bytes]]:
    """Encode values as compact JSON bytes; an Event reuses its cached bytes.

    >>> import reactivex
    >>> reactivex.of({"a": 1}).pipe(encode_json()).subscribe(print)  # doctest: +ELLIPSIS
    b'{"a":1}'
    <...>
    """
    return lean(PureSpec("map", _dumps, on_error))

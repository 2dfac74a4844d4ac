"""The error policy shared by every operator that calls user code.

One bad event must not end a live stream unless you ask for it. Each operator taking a
user function accepts ``on_error=``:

- ``"fail"`` (default): the stream ends with the exception, like stock reactivex;
- ``"skip"``: the event is dropped and the stream goes on;
- a dead-letter sink: an observer (e.g. a ``reactivex.Subject``) receiving
  :class:`DeadLetter` ``(event, error)`` tuples, or a callable ``f(event, error)``.

>>> import reactivex
>>> from operators import select
>>> dead = []
>>> out = []
>>> _ = reactivex.of(1, 0, 2).pipe(
...     select(lambda x: 10 // x, on_error=lambda e, exc: dead.append(e))
... ).subscribe(out.append)
>>> out, dead
([10, 5], [0])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeAlias

from reactivex import abc

__all__ = ["DeadLetter", "OnError", "make_handler"]


class DeadLetter(NamedTuple):
    """An event that user code failed on, with the exception it raised."""

    event: Any
    error: Exception


OnError: TypeAlias = (
    Literal["fail", "skip"] | abc.ObserverBase[DeadLetter] | Callable[[Any, Exception], Any]
)

Handler: TypeAlias = Callable[[Any, Exception], None]


def _skip(event: Any, error: Exception) -> None:
    return None


def make_handler(policy: OnError, fail: Callable[[Exception], None]) -> Handler:
    """Turn a policy into ``handler(event, error)``; ``fail`` ends the stream.

    >>> h = make_handler("skip", print)
    >>> h(1, ValueError("x"))
    """
    if policy == "fail":
        return lambda event, error: fail(error)
    if policy == "skip":
        return _skip
    on_next = getattr(policy, "on_next", None)
    if callable(on_next):
        return lambda event, error: on_next(DeadLetter(event, error))
    if callable(policy):
        return policy
    raise ValueError(f"on_error must be 'fail', 'skip', an observer or a callable, not {policy!r}")


def check_policy(policy: OnError) -> OnError:
    """Validate a policy early, at pipeline construction time."""
    make_handler(policy, _raise)
    return policy


def _raise(error: Exception) -> None:
    raise error

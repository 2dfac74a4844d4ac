"""Stateless operators: ``where`` (filter) and ``select`` (map), fused when adjacent.

Both accept ``on_error=`` (see :mod:`operators.policy`). Adjacent rxstreams operators are
compiled into one function per subscription, so a chain of them costs one call per event.
Operators assume one loop or thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable

from ._core import PureSpec, lean
from .policy import OnError

__all__ = ["select", "where"]

A = TypeVar("A")
B = TypeVar("B")


def where(
    predicate: Callable[[A], Any], on_error: OnError = "fail"
) -> Callable[[Observable[A]], Observable[A]]:
    """Keep the events for which ``predicate`` is truthy.

    >>> import reactivex
    >>> reactivex.of(1, 2, 3, 4).pipe(where(lambda x: x % 2 == 0)).subscribe(print)
    ... # doctest: +ELLIPSIS
    2
    4
    <...>
    """
    return lean(PureSpec("filter", predicate, on_error))


def select(
    mapper: Callable[[A], B], on_error: OnError = "fail"
) -> Callable[[Observable[A]], Observable[B]]:
    """Transform each event with ``mapper``.

    >>> import reactivex
    >>> reactivex.of(1, 2).pipe(select(lambda x: x * 10)).subscribe(print)  # doctest: +ELLIPSIS
    10
    20
    <...>
    """
    return lean(PureSpec("map", mapper, on_error))

"""The event loop ``rxstreams serve`` and ``demo`` run on: uvloop when installed.

uvloop (the ``rxstreams[uvloop]`` extra) makes every socket write and callback cheaper;
the server works the same on the standard loop. ``RXSTREAMS_LOOP=asyncio`` (or
``uvloop``) chooses explicitly, e.g. to compare them.

    from adapters.server.loop import run
    run(serve_app(app, host, port))  # instead of asyncio.run(...)
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "loop_name", "run"]

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str | None = None) -> LoopFactory | None:
    """uvloop's ``new_event_loop`` when installed (and not declined), else ``None``
    (the standard loop). ``choice`` defaults to ``$RXSTREAMS_LOOP``: ``uvloop``,
    ``asyncio`` or empty (uvloop if installed). Asking for uvloop without it raises.

    >>> loop_factory("asyncio") is None
    True
    """
    choice = (choice if choice is not None else os.environ.get("RXSTREAMS_LOOP", "")).lower()
    if choice == "asyncio":
        return None
    if choice not in ("", "uvloop"):
        raise ValueError(f"RXSTREAMS_LOOP must be 'uvloop' or 'asyncio', not {choice!r}")
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_name(factory: LoopFactory | None) -> str:
    """``"uvloop"`` or ``"asyncio"``, for logs and benchmark lines.

    >>> loop_name(None)
    'asyncio'
    """
    return "asyncio" if factory is None else factory.__module__.split(".")[0]


def run(main: Coroutine[Any, Any, T], choice: str | None = None) -> T:
    """Run ``main`` to completion on the chosen loop, like :func:`asyncio.run`.

    >>> async def answer() -> int:
    ...     return 42
    >>> run(answer())
    42
    """
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)

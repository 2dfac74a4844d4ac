"""Factories for ``rxstreams serve`` in the integration tests.

``idle`` returns an Observable that never emits, so ``rxstreams serve`` builds the app on
the broker its ``--broker URL`` names (a factory returning a broker would ignore the flag).

>>> from reactivex import Observable
>>> isinstance(idle(), Observable)
True
"""

from __future__ import annotations

from typing import Any

import reactivex
from reactivex import Observable


def idle() -> Observable[Any]:
    """Nothing to expose: the server only relays what clients publish and subscribe."""
    return reactivex.never()

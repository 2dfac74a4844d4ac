"""What NatsBroker and RedisBroker share: ``subscribe()`` as one task per subscription.

Each broker implements ``_follow(pattern, since, emit, pin)``, the loop that reads its log
(replay after ``since``, then live, reconnecting as needed); this base turns it into a hot
``Observable`` and pins live starts at subscribe time (see :mod:`.livestart`).
"""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable

from streams import Event, Position, validate_pattern

from .feed import Body, Emit, TaskFeeds, _nothing
from .livestart import LiveStarts, Pin

__all__ = ["FollowingBroker"]


class FollowingBroker:
    """Base of the networked brokers: a task per subscription running ``_follow``."""

    _feeds: TaskFeeds
    _live: LiveStarts

    async def _follow(
        self, pattern: str, since: Position | None, emit: Emit, pin: Pin | None = None
    ) -> None:
        raise NotImplementedError

    def subscribe(self, pattern: str, since: Position | str | None = None) -> Observable[Event]:
        """Matching events after ``since`` (or from now), then live; fails with
        :class:`~streams.GapError` when events after ``since`` are gone."""
        validate_pattern(pattern)
        start = Position.parse(since) if isinstance(since, str) else since

        def begin() -> tuple[Body, Callable[[], None]]:
            # A live subscription is pinned now: see :mod:`.livestart`.
            pin = self._live.pin() if start is None else None

            async def body(emit: Emit) -> None:
                await self._follow(pattern, start, emit, pin)

            return body, (pin.close if pin is not None else _nothing)

        return self._feeds.each(begin)

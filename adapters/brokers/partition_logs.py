"""Where a keyed worker group's partition events are stored: streams of its own.

The router republishes every input event to its partition; those copies live beside the
input stream, never in it, so the input stream's limits (NATS keeps 1,000 events per subject
by default) cannot evict a partition's events before its owner read them, and an input
pattern of ``>`` never reads them back.

- NATS: one stream ``<stream>_<group>_parts`` (subjects ``rxpart.<group>.<n>``); the server
  filters each partition's subscription by subject. Kept 7 days, no per-subject limit.
- Redis: one stream per partition, ``<stream>_<group>_parts_<n>``: Redis streams cannot
  filter on the server, and one shared stream would make every partition read them all.
  Each checkpoint trims its partition's stream up to the entry it covers.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from streams import Retention

from .partitions import PARTITION_PREFIX

__all__ = ["PARTS_RETENTION", "PartitionLogs"]

PARTS_RETENTION = Retention(
    max_events=None, max_bytes=None, max_age=7 * 86400, max_per_subject=None
)


def partition_number(subject: str) -> int | None:
    """The partition a partition subject names, ``None`` for any other subject.

    >>> partition_number("rxpart.g.12"), partition_number("rxdead.g")
    (12, None)
    """
    if not subject.startswith(PARTITION_PREFIX + "."):
        return None
    return int(subject.rpartition(".")[2])


class PartitionLogs:
    """The brokers holding ``group``'s partitions, made like ``broker`` (lazily)."""

    def __init__(self, broker: Any, group: str) -> None:
        self.broker = broker
        self.per_partition = hasattr(broker, "log_key")  # Redis
        self.base = re.sub(r"[^A-Za-z0-9_-]", "_", f"{broker.stream}_{group}_parts")
        self._brokers: dict[str, Any] = {}

    def _name(self, partition: int) -> str:
        return f"{self.base}_{partition}" if self.per_partition else self.base

    def of(self, partition: int) -> Any:
        """The broker whose log holds ``partition`` (shared by all partitions on NATS)."""
        name = self._name(partition)
        found = self._brokers.get(name)
        if found is None:
            cls = type(self.broker)
            found = self._brokers[name] = cls(
                self.broker.url, stream=name, retention=PARTS_RETENTION
            )
        return found

    def for_subject(self, subject: str) -> Any:
        """The broker a routed event goes to: its partition's, or the input broker for any
        other subject (dead letters)."""
        n = partition_number(subject)
        return self.broker if n is None else self.of(n)

    async def close(self) -> None:
        brokers, self._brokers = list(self._brokers.values()), {}
        for b in brokers:
            with contextlib.suppress(Exception):
                await b.close()

    async def drop(self, partitions: int) -> None:
        """Delete every partition log (tests and tear-down)."""
        for n in range(partitions):
            with contextlib.suppress(Exception):
                await self.of(n).drop()
        await self.close()

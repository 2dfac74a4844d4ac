"""Where a keyed worker group's partition events are stored: streams of its own.

The router republishes every input event to its partition; those copies live beside the
input stream, never in it, so the input stream's limits (NATS keeps 1,000 events per subject
by default) cannot evict a partition's events before its owner read them, and an input
pattern of ``>`` never reads them back.

One log per partition, ``<stream>_<group>_parts_<n>`` (a NATS stream capturing
``<stream>_<group>_parts_<n>.rxpart.<group>.<n>``, or a Redis stream), kept 7 days at most
and with no count limit. Each partition's log is trimmed by its owner right after a
checkpoint commit, up to (not including) the entry the checkpoint names: NATS ``purge``
with ``seq``, Redis ``XTRIM MINID`` inside the commit script. Why one log per partition:

- Redis streams cannot filter on the server: one shared stream would make every partition
  read them all.
- NATS could filter one shared stream by subject, but a partition's resume check looks at
  the whole stream (its first sequence and deleted sequences): purging one partition's
  subject up to its checkpoint leaves holes after another partition's older checkpoint,
  which that partition's next owner would take for lost events. A stream of its own is
  trimmed from its head only, so its first sequence never passes its checkpoint.

Trimming never removes input a future owner needs: a trim follows a commit that succeeded
(a fenced member's commit fails, and it trims nothing), it keeps the checkpointed entry
and everything after it, and the stored checkpoint only moves forward. A new owner never
restores an older checkpoint than the newest stored one: on NATS its claim is a
compare-and-set on the record it read (a stale read, from a lagging replica say, fails it
and the claim reads again), on Redis the claim reads the primary after the fence. A commit
that went through before a takeover is what the taker restores, or older than it, so a
zombie's late trim never reaches past what the stored checkpoint covers.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from streams import Retention

from .partitions import PARTITION_PREFIX

__all__ = ["PARTS_RETENTION", "PartitionLogs", "partition_number"]

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
        self.base = re.sub(r"[^A-Za-z0-9_-]", "_", f"{broker.stream}_{group}_parts")
        self._brokers: dict[str, Any] = {}

    def name(self, partition: int) -> str:
        """The stream holding ``partition``: ``<stream>_<group>_parts_<n>``."""
        return f"{self.base}_{partition}"

    def is_log(self, stream: str) -> bool:
        """Whether ``stream`` is one of this group's partition logs (for tear-down)."""
        head, _, n = stream.rpartition("_")
        return head == self.base and n.isdigit()

    def of(self, partition: int) -> Any:
        """The broker whose log holds ``partition``."""
        name = self.name(partition)
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

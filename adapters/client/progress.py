"""A tiny progress bar for stderr (no dependency): redrawn in place, at most every
``interval`` seconds, and silent when the stream is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "human_bytes"]


def human_bytes(n: float) -> str:
    """A byte count for people.

    >>> human_bytes(1536), human_bytes(12)
    ('1.5 KiB', '12 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """``update(count, done)`` as work advances, ``finish()`` at the end.

    >>> import io
    >>> buf = io.StringIO()
    >>> p = Progress(2048, buf, enabled=True, width=10)
    >>> p.update(10, 1024); p.finish()
    >>> buf.getvalue().rsplit("\\r", 1)[-1]
    '[##########] 100%  10 events  2.0 KiB/2.0 KiB\\n'
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 30,
        interval: float = 0.1,
    ) -> None:
        self.total = max(total, 0)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.interval = interval
        self._last = 0.0
        self._count = 0
        self._done = 0

    def update(self, count: int, done: int) -> None:
        self._count, self._done = count, done
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._draw()

    def finish(self) -> None:
        if self.enabled:
            self._done = max(self._done, self.total)
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        frac = min(self._done / self.total, 1.0) if self.total else 1.0
        filled = round(frac * self.width)
        bar = "#" * filled + " " * (self.width - filled)
        self.stream.write(
            f"\r[{bar}] {frac:4.0%}  {self._count} events  "
            f"{human_bytes(self._done)}/{human_bytes(self.total)}"
        )
        self.stream.flush()

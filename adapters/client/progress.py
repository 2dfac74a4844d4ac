"""A tiny progress bar for stderr (no dependency): redrawn in place, at most every
``interval`` seconds, with the rate and the time left; silent when the stream is not a
terminal, except for one line when the server starts throttling."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "human_bytes", "human_duration"]


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


def human_duration(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for an ETA or an elapsed time.

    >>> human_duration(7.2), human_duration(125), human_duration(3725)
    ('0:07', '2:05', '1:02:05')
    """
    s = max(round(seconds), 0)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``update(count, done)`` as work advances, ``throttled(wait)`` when the server answers
    429, ``finish()`` at the end. ``total`` is in bytes (0: unknown, e.g. stdin).

    >>> import io
    >>> buf, now = io.StringIO(), iter([0.0, 1.0, 2.0]).__next__
    >>> p = Progress(2048, buf, enabled=True, width=10, clock=now)
    >>> p.update(10, 1024)
    >>> p.line(1.0)
    '[#####     ]  50%  10 events  1.0 KiB/2.0 KiB  10 ev/s  ETA 0:01'
    >>> p.finish()
    >>> buf.getvalue().rsplit("\\r", 1)[-1].rstrip()
    '[##########] 100%  10 events  2.0 KiB/2.0 KiB  5 ev/s  in 0:02'
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 30,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(total, 0)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.throttles = 0  # 429 answers so far
        self.waited = 0.0  # seconds spent waiting for them
        self._last = float("-inf")
        self._count = 0
        self._done = 0
        self._note = ""
        self._drawn = 0  # width of the line on screen, to blank what a shorter one leaves

    def update(self, count: int, done: int) -> None:
        self._count, self._done = count, done
        self._note = ""
        now = self.clock()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._draw(now)

    def throttled(self, wait: float | None) -> None:
        """The server refused a request with 429 (rate limited); the upload waits ``wait``
        seconds (``Retry-After``) and sends it again."""
        self.throttles += 1
        self.waited += wait or 0.0
        self._note = f"  throttled by the server: retrying in {wait or 0:.1f} s"
        if self.enabled:
            self._draw(self.clock())
        elif self.throttles == 1:
            self.stream.write(f"rxstreams publish: {self._note.strip()} (429 rate_limited)\n")
            self.stream.flush()

    def finish(self) -> None:
        now = self.clock()
        if self.enabled:
            self._done = max(self._done, self.total)
            self._note = ""
            self._draw(now, final=True)
            self.stream.write("\n")
        if self.throttles:
            self.stream.write(
                f"rxstreams publish: the server throttled this upload {self.throttles} times "
                f"({self.waited:.1f} s waiting): its publish rate limit is per connection "
                "(rxstreams serve/demo --publish-rate, or ServerConfig.publish_rate)\n"
            )
        self.stream.flush()

    def line(self, now: float, final: bool = False) -> str:
        """The bar as text (what is drawn)."""
        frac = min(self._done / self.total, 1.0) if self.total else 1.0
        filled = round(frac * self.width)
        bar = "#" * filled + " " * (self.width - filled)
        elapsed = max(now - self.started, 1e-9)
        rate = self._count / elapsed
        text = f"[{bar}] {frac:4.0%}  {self._count} events  {human_bytes(self._done)}"
        if self.total:
            text += f"/{human_bytes(self.total)}"
        text += f"  {rate:,.0f} ev/s"
        if final:
            text += f"  in {human_duration(elapsed)}"
        elif self.total and self._done:
            left = (self.total - self._done) * elapsed / self._done
            text += f"  ETA {human_duration(left)}"
        return text + self._note

    def _draw(self, now: float, final: bool = False) -> None:
        text = self.line(now, final)
        self.stream.write("\r" + text + " " * max(self._drawn - len(text), 0))
        self._drawn = len(text)
        self.stream.flush()

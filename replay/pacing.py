"""Replay pacing (the recorded clock scaled by --speed) and the progress line.

Progress: one line on stderr refreshed in place when it is a terminal, a plain line every few
seconds otherwise — done/total lines, published entries per second, and time left.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO


__all__ = ["Pacer", "Progress"]


class Pacer:
    """Maps recorded µs times onto the wall clock: `(t - t0) / speed` after the start."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        """0.0 means as fast as possible."""
        self._t0: int | None = None
        self._wall0 = 0.0

    def delay(self, t: int) -> float:
        """Seconds until recorded time `t` is due (0 when due, or unpaced)."""
        if not self.speed:
            return 0.0
        if self._t0 is None:
            self._t0, self._wall0 = t, time.monotonic()
            return 0.0
        due = self._wall0 + (t - self._t0) / 1e6 / self.speed
        return max(0.0, due - time.monotonic())

    def shift(self, seconds: float) -> None:
        """Move the schedule later (time spent waiting for a client does not count)."""
        self._wall0 += seconds

    async def wait(self, t: int) -> None:
        """Sleep until `t` is due."""
        pause = self.delay(t)
        if pause > 0:
            await asyncio.sleep(pause)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """done/total, events/s and time left, on stderr."""

    def __init__(
        self,
        total: int,
        span_us: int,
        speed: float,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.total = total
        self.span_us = span_us
        self.speed = speed
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.started = time.monotonic()
        self._shown = 0.0

    def update(self, done: int, published: int, t_done_us: int = 0, *, final: bool = False) -> None:
        """Show the line if it is due (always when `final`)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._shown < self.interval:
            return
        self._shown = now
        elapsed = max(now - self.started, 1e-9)
        rate = published / elapsed
        if self.speed and self.span_us:  # paced: the recorded time still ahead, scaled
            left = max(0.0, (self.span_us - t_done_us) / 1e6 / self.speed)
        else:
            left = (self.total - done) * elapsed / done if done else 0.0
        pct = 100.0 * done / self.total if self.total else 100.0
        text = (
            f"replay {done}/{self.total} lines ({pct:5.1f}%)  {published} entries  "
            f"{rate:,.0f} events/s  left {_clock(left)}"
        )
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

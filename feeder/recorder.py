"""Raw recording: every frame received and sent, and the connection events, as JSON lines.

One line per item: `{"t": µs since the epoch, "conn": id, "kind": "rx"|"tx"|"open"|"close",
…}`; frames keep their exact text in `"frame"`. A `.gz` path is gzip-compressed. Recording
never slows or stops the feed: lines go through a bounded queue to a writer thread, and when
the queue is full (a slow disk) or the file fails (a full disk) lines are dropped, counted and
reported once — the feed goes on.
"""

from __future__ import annotations

import contextlib
import gzip
import queue
import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson
import structlog


__all__ = ["Recorder"]

log = structlog.get_logger("feeder.recorder")

_STOP = b""


class Recorder:
    """Writes recording lines from the event loop without ever blocking it."""

    def __init__(self, path: str | Path, capacity: int = 200_000) -> None:
        self.path = Path(path)
        self.written = 0
        self.dropped = 0
        self.failed: str = ""
        self._queue: queue.Queue[bytes] = queue.Queue(capacity)
        self._file: IO[bytes] = (  # gzip level 1: keeping up matters more than size
            gzip.open(self.path, "ab", compresslevel=1) if self.path.suffix == ".gz"  # type: ignore[assignment]
            else open(self.path, "ab")
        )
        self._thread = threading.Thread(target=self._drain, name="polybus-recorder", daemon=True)
        self._thread.start()

    # --- what the feed calls (event loop thread) -------------------------------------------
    def rx(self, conn: int, t_us: int, frame: str | bytes) -> None:
        """A frame received at `t_us`."""
        text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        self._put({"t": t_us, "conn": conn, "kind": "rx", "frame": text})

    def tx(self, conn: int, frame: str) -> None:
        """A frame sent."""
        self._put({"t": time.time_ns() // 1000, "conn": conn, "kind": "tx", "frame": frame})

    def event(self, conn: int, kind: str, **fields: Any) -> None:
        """A connection event: open (url, epoch), close (reason, code)."""
        self._put({"t": time.time_ns() // 1000, "conn": conn, "kind": kind, **fields})

    def _put(self, item: dict[str, Any]) -> None:
        if self.failed:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(orjson.dumps(item) + b"\n")
        except queue.Full:
            if not self.dropped:
                log.warning("feeder.record.behind", path=str(self.path))
            self.dropped += 1

    def close(self) -> None:
        """Flush what is queued and close the file (waits for the writer thread)."""
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=5)
        self._thread.join(10)
        log.info("feeder.record.closed", path=str(self.path), written=self.written,
                 dropped=self.dropped)

    # --- writer thread --------------------------------------------------------------------
    def _drain(self) -> None:
        try:
            stop = False
            while not stop:
                lines = [self._queue.get()]
                with contextlib.suppress(queue.Empty):
                    while len(lines) < 10_000:  # take what has piled up: one write per batch
                        lines.append(self._queue.get_nowait())
                if lines[-1] == _STOP:
                    stop = True
                    lines.pop()
                self._write(lines)
        finally:
            with contextlib.suppress(OSError):
                self._file.close()

    def _write(self, lines: list[bytes]) -> None:
        if self.failed or not lines:
            return
        try:
            self._file.write(b"".join(lines))
            self.written += len(lines)
        except OSError as exc:  # full disk, lost mount: stop recording, not feeding
            self.failed = str(exc)
            self.dropped += len(lines)
            log.error("feeder.record.failed", path=str(self.path), error=str(exc))

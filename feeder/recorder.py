"""Raw recording: every frame received and sent, and the connection events, as JSON lines.

One line per item: `{"t": µs since the epoch, "conn": id, "kind": "rx"|"tx"|"open"|"close",
…}`; frames keep their exact text in `"frame"`. A `.gz` path is gzip-compressed. Recording
never slows or stops the feed: lines go through a bounded queue to a writer thread, and when
the queue is full (a slow disk) or the file fails (a full disk) lines are dropped, counted and
reported once — the feed goes on.

Crash safety: the writer hands what it has to the kernel at least every `FLUSH_INTERVAL`
seconds, so a SIGKILL loses at most that much. A `.gz` file is written as a series of complete
gzip members, one per flush (concatenated members are one valid gzip file, RFC 1952 §2.2): a
killed recording is readable by `zcat` and `polybus replay` up to its last flush, instead of
a stream whose only member never got its trailer.
"""

from __future__ import annotations

import contextlib
import gzip
import queue
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson
import structlog


__all__ = ["FLUSH_INTERVAL", "GzipMembers", "Recorder"]

log = structlog.get_logger("feeder.recorder")

FLUSH_INTERVAL = 0.25
"""Seconds a recorded line may wait in memory before it is written out."""

_MAX_PENDING = 4 * 2**20
"""Bytes that are written out at once, whatever the interval (bounds memory and member size)."""

_STOP = b""


class GzipMembers:
    """A write-only binary file of concatenated gzip members: one complete member per flush.

    Writes are buffered in memory; `flush()` compresses the buffer into a member and writes it
    to the kernel, so what a flush returned from survives a kill of the process as valid gzip.
    """

    def __init__(self, path: str | Path, mode: str = "wb", level: int = 1) -> None:
        self._raw: IO[bytes] = open(path, mode)  # closed in close()
        self._level = level  # 1: keeping up matters more than size
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        """Buffer `data` until the next flush."""
        self._buffer += data
        return len(data)

    def flush(self) -> None:
        """Write what is buffered as one complete gzip member."""
        if self._buffer:
            member = gzip.compress(bytes(self._buffer), compresslevel=self._level, mtime=0)
            self._buffer.clear()
            self._raw.write(member)
        self._raw.flush()

    def close(self) -> None:
        """Flush and close the file."""
        if not self._raw.closed:
            try:
                self.flush()
            finally:
                self._raw.close()

    def __enter__(self) -> GzipMembers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Recorder:
    """Writes recording lines from the event loop without ever blocking it."""

    def __init__(
        self, path: str | Path, capacity: int = 200_000, flush_interval: float = FLUSH_INTERVAL
    ) -> None:
        self.path = Path(path)
        self.written = 0
        self.dropped = 0
        self.failed: str = ""
        self.flush_interval = flush_interval
        self._closed = False
        self._queue: queue.Queue[bytes] = queue.Queue(capacity)
        self._file: IO[bytes] | GzipMembers = (
            GzipMembers(self.path, "ab")
            if self.path.suffix == ".gz"
            else open(self.path, "ab")  # the writer thread closes it
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
        if self.failed or self._closed:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(orjson.dumps(item) + b"\n")
        except queue.Full:
            if not self.dropped:
                log.warning("feeder.record.behind", path=str(self.path))
            self.dropped += 1

    def close(self) -> None:
        """Flush what is queued and close the file (waits for the writer thread).

        May run in another thread than the feed (the feeder calls it via to_thread): a line
        the feed puts meanwhile can land after the stop mark, and the writer handles that.
        """
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=5)
        self._thread.join(10)
        self.dropped += self._queue.qsize()  # put after the writer's last look: never written
        log.info(
            "feeder.record.closed", path=str(self.path), written=self.written, dropped=self.dropped
        )

    # --- writer thread --------------------------------------------------------------------
    def _drain(self) -> None:
        try:
            pending: list[bytes] = []
            size, due = 0, 0.0
            stop = False
            while not stop:
                batch = self._take(due - time.monotonic() if pending else None)
                if _STOP in batch:  # not necessarily last: a line may race close()
                    stop = True
                    batch = [line for line in batch if line != _STOP]
                    batch += self._take(0.0)  # and whatever else got in before it
                if batch and not pending:
                    due = time.monotonic() + self.flush_interval
                pending += batch
                size += sum(map(len, batch))
                if stop or size >= _MAX_PENDING or time.monotonic() >= due:
                    self._write(pending)
                    pending, size = [], 0
        finally:
            with contextlib.suppress(OSError):
                self._file.close()

    def _take(self, timeout: float | None) -> list[bytes]:
        """What is queued: waits up to `timeout` s for the first line (None: for ever)."""
        lines: list[bytes] = []
        with contextlib.suppress(queue.Empty):
            if timeout is None or timeout > 0:
                lines.append(self._queue.get(timeout=timeout))
            while len(lines) < 10_000:  # take what has piled up: one write per batch
                lines.append(self._queue.get_nowait())
        return lines

    def _write(self, lines: list[bytes]) -> None:
        if self.failed or not lines:
            return
        try:
            self._file.write(b"".join(lines))
            self._file.flush()
            self.written += len(lines)
        except OSError as exc:  # full disk, lost mount: stop recording, not feeding
            self.failed = str(exc)
            self.dropped += len(lines)
            log.error("feeder.record.failed", path=str(self.path), error=str(exc))

"""`polybus replay FILE --serve PORT`: an exchange-like market channel that replays a recording.

An unmodified `polybus feed --ws-url ws://127.0.0.1:PORT/ws/market` connects to it as to
Polymarket. The server answers `PING` with `PONG`, accepts (and otherwise ignores) subscribe
frames, and sends the recorded inbound frames (kind `rx`, of every recorded connection, in
recorded order) with the recorded pacing scaled by --speed, to every client that has sent its
subscribe. The clock only runs while a client is connected: nothing is sent into the void.

Drops: a recorded `close` that a later `open` follows is reproduced by aborting every client's
TCP connection (the client sees 1006, as with a real drop); the frames resume, from the
recorded frame after the close, to the next client that subscribes — so the feeder gets the
recorded reconnect snapshot as the answer to its own reconnect. The final close (the recorded
feeder's shutdown) is not reproduced: at the end the server stays up, idle, answering PINGs.
`--no-drops` sends everything to one unbroken connection.

`--from T`: lines before T are folded through the normalizer and mirror, and the server starts
with one snapshot frame (an array of `book` objects) of every book as it stood at T.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from polybus.replay.pacing import Pacer, Progress
from polybus.replay.rawfold import ListSink, RawFolder
from polybus.replay.sessions import SessionError, detect_format, read_lines
from polybus.simulator.connection import ws_frame


__all__ = ["ReplayServer"]

log = structlog.get_logger("polybus.replay.serve")

HIGH_WATER = 4 * 2**20
"""Bytes buffered for a client before the replay waits for it to catch up."""


class ReplayServer:
    """Serves one raw recording at /ws/market."""

    def __init__(
        self,
        path: str | Path,
        *,
        speed: float = 0.0,
        start: int | None = None,
        end: int | None = None,
        drops: bool = True,
        progress: Progress | None = None,
    ) -> None:
        if detect_format(path) != "raw":
            raise SessionError(f"{path}: --serve replays raw recordings (polybus feed --record)")
        self.path = path
        self.pacer = Pacer(speed)
        self.start_us, self.end_us = start, end
        self.drops = drops
        self.progress = progress
        self.url = ""
        self.sent = 0
        self.lines = 0
        self.seconds = 0.0
        self.done = asyncio.Event()
        self._clients: set[ServerConnection] = set()
        self._ready = asyncio.Event()
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen (port 0 picks one) and start the replay, which waits for a client."""
        self._server = await serve(
            self._handle,
            host,
            port,
            compression=None,
            ping_interval=None,
            max_size=2**22,
            server_header="polybus",
        )
        bound = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://{host}:{bound}/ws/market"
        self._task = asyncio.create_task(self._replay(), name="polybus.replay.serve.replay")

    async def stop(self) -> None:
        """Stop replaying and close the server."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def rate(self) -> float:
        """Frames sent per second of replay."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    # --- clients ----------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path.split("?")[0] != "/ws/market":
            await ws.close(1008, "not found")
            return
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                if text.strip() == "PING":
                    await ws.send("PONG")
                elif ws not in self._clients:  # its subscribe: now it can take data
                    self._clients.add(ws)
                    self._ready.set()
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(ws)
            if not self._clients:
                self._ready.clear()

    async def _client(self) -> None:
        """Wait for a subscribed client; the pacing clock stands still meanwhile."""
        if self._clients:
            return
        waited = time.monotonic()
        await self._ready.wait()
        self.pacer.shift(time.monotonic() - waited)

    async def _send(self, text: str) -> None:
        await self._client()
        frame = ws_frame(text.encode())
        for ws in list(self._clients):
            transport = ws.transport
            transport.write(frame)
            # Backpressure: a slow client slows the replay (the transport has no drain event).
            while transport.get_write_buffer_size() > HIGH_WATER and ws in self._clients:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
        self.sent += 1

    def _drop_all(self) -> None:
        for ws in list(self._clients):
            ws.transport.abort()
        self._clients.clear()
        self._ready.clear()

    # --- the replay -------------------------------------------------------------------------
    async def _replay(self) -> None:
        last_open = max(
            (int(x["t"]) for x in read_lines(self.path) if x.get("kind") == "open"), default=0
        )
        await self._client()
        started = time.perf_counter()
        folder = RawFolder(ListSink()) if self.start_us is not None else None
        t0 = 0
        for line, t in self._lines():
            if folder is not None:
                if t < self.start_us:  # type: ignore[operator]
                    folder.feed(line)
                    continue
                await self._send(folder.snapshot_frame())
                folder = None
            kind = line.get("kind")
            if kind == "rx":
                await self.pacer.wait(t)
                await self._send(str(line.get("frame", "")))
            elif kind == "close" and self.drops and t < last_open and self._clients:
                log.info("replay.serve.drop", t=t, reason=line.get("reason"))
                self._drop_all()
            self.lines += 1
            if self.progress is not None:
                self.seconds = time.perf_counter() - started
                t0 = t0 or t
                self.progress.update(self.lines, self.sent, t - t0)
        self.seconds = time.perf_counter() - started
        if self.progress is not None:
            self.progress.update(self.lines, self.sent, self.progress.span_us, final=True)
        self.done.set()

    def _lines(self) -> Iterator[tuple[dict[str, Any], int]]:
        for line in read_lines(self.path):
            t = int(line.get("t", 0))
            if self.end_us is not None and t > self.end_us:
                return
            yield line, t

"""The simulated market channel: WebSocket at /ws/market, order flow, faults.

`Simulator` ties the engine, the WebSocket server and the REST/Gamma server together and is
what tests drive: read the engine's truth, pause the flow, inject faults per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from simulator.engine import Engine
from simulator.faults import Faults


__all__ = ["SimConfig", "SimConnection", "Simulator"]

log = structlog.get_logger("simulator")

TICK = 0.01
"""Seconds between flow batches."""


@dataclass(frozen=True)
class SimConfig:
    """How the simulated exchange behaves."""

    markets: int = 20
    seed: int = 1
    rate: float = 50.0
    """Engine actions per second; 0 = as fast as possible."""
    new_market_every: float = 0.0
    """Seconds between new markets (0 = never)."""
    resolve_every: float = 0.0
    """Seconds between resolutions (0 = never)."""
    silence_timeout: float = 60.0
    """Close a connection whose client sent nothing for this long (0 = never)."""
    bba_every: int = 1
    """Send best_bid_ask on every n-th top-of-book change."""


@dataclass
class SimConnection:
    """One client connection, as the simulated exchange sees it."""

    id: int
    ws: ServerConnection
    faults: Faults
    subscribed: set[str] = field(default_factory=set)
    custom: bool = False
    initialized: bool = False
    last_rx: float = 0.0
    closed: bool = False
    sent: int = 0
    _last_ts: int = 0

    def drop(self) -> None:
        """Abrupt drop: the TCP connection dies with no close frame (the client sees 1006)."""
        self.closed = True
        with contextlib.suppress(Exception):
            self.ws.transport.abort()

    async def send_raw(self, text: str) -> None:
        """Send any text frame (malformed JSON, unknown events) as if from the exchange."""
        await self._send(text)

    async def _send(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self.ws.send(text)
            self.sent += 1
        except ConnectionClosed:
            self.closed = True


class Simulator:
    """A faithful local Polymarket: engine + WS market channel + REST/Gamma twin."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.engine = Engine(self.config.markets, self.config.seed)
        self.faults = Faults()
        self.connections: list[SimConnection] = []
        self.stats: dict[str, int] = {"frames": 0, "accepted": 0, "rejected": 0, "actions": 0}
        self.ws_url = ""
        self.http_url = ""
        self._ids = itertools.count(1)
        self._reject: tuple[int, int] = (0, 429)
        self._rng = random.Random(self.config.seed + 1)
        self._paused = False
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._ws_server: Server | None = None
        self._http_server: asyncio.Server | None = None

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0, http_port: int = 0) -> None:
        """Start both servers and the flow; port 0 picks a free port."""
        from simulator.http import serve_http

        self._ws_server = await serve(self._handle, host, port, process_request=self._gate,
                                      compression=None, max_size=2**22, ping_interval=None)
        ws_port = self._ws_server.sockets[0].getsockname()[1]
        self._http_server = await serve_http(self, host, http_port)
        http_port = self._http_server.sockets[0].getsockname()[1]
        self.ws_url = f"ws://{host}:{ws_port}/ws/market"
        self.http_url = f"http://{host}:{http_port}"
        self._tasks = [asyncio.create_task(self._flow()), asyncio.create_task(self._watch())]
        if self.config.new_market_every or self.config.resolve_every:
            self._tasks.append(asyncio.create_task(self._lifecycle()))
        log.info("simulator.start", ws_url=self.ws_url, http_url=self.http_url,
                 markets=self.config.markets)

    async def stop(self) -> None:
        """Stop flow and servers; drop every connection."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.drop_all()
        if self._ws_server is not None:
            self._ws_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws_server.wait_closed(), 2)
        if self._http_server is not None:
            self._http_server.close()

    async def pause(self) -> None:
        """Stop generating flow; once this returns no new flow frames are produced."""
        self._paused = True
        async with self._lock:
            pass

    def resume(self) -> None:
        """Generate flow again."""
        self._paused = False

    # --- faults -------------------------------------------------------------------------
    def drop_all(self) -> None:
        """Abrupt drop of every live connection."""
        for conn in list(self.connections):
            conn.drop()

    def reject_handshakes(self, count: int, status: int = 429) -> None:
        """Refuse the next `count` WebSocket handshakes with this HTTP status."""
        self._reject = (count, status)

    async def wait_connections(self, n: int, timeout: float = 10.0) -> None:
        """Wait until n connections are live and subscribed."""
        deadline = time.monotonic() + timeout
        while sum(1 for c in self.connections if c.initialized and not c.closed) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} subscribed connections did not appear")
            await asyncio.sleep(0.01)

    # --- WebSocket side -----------------------------------------------------------------
    def _gate(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] != "/ws/market":
            return _response(HTTPStatus.NOT_FOUND, b"404 page not found\n")
        count, status = self._reject
        if count > 0:
            self._reject = (count - 1, status)
            self.stats["rejected"] += 1
            return _response(HTTPStatus(status), b"Too Many Requests\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = SimConnection(next(self._ids), ws, self.faults.copy(), last_rx=time.monotonic())
        self.connections.append(conn)
        self.stats["accepted"] += 1
        try:
            async for message in ws:
                conn.last_rx = time.monotonic()
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                await self._on_message(conn, text)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self.connections.remove(conn)

    async def _on_message(self, conn: SimConnection, text: str) -> None:
        if text.strip() == "PING":
            await conn._send("PONG")  # stalled connections still answer: that is the trap
            return
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            await conn._send("INVALID OPERATION")
            return
        if not isinstance(msg, dict):
            await conn._send("INVALID OPERATION")
            return
        ids = [str(t) for t in msg.get("assets_ids") or [] if isinstance(t, str | int)]
        if msg.get("type", "").lower() == "market" and "operation" not in msg:
            if conn.initialized:
                await conn._send("INVALID OPERATION")
                return
            conn.initialized = True
            conn.custom = bool(msg.get("custom_feature_enabled"))
            await self._subscribe(conn, ids, msg.get("initial_dump", True) is not False)
        elif msg.get("operation") == "subscribe" and conn.initialized:
            if msg.get("custom_feature_enabled"):
                conn.custom = True
            await self._subscribe(conn, ids, msg.get("initial_dump", True) is not False)
        elif msg.get("operation") == "unsubscribe" and conn.initialized:
            conn.subscribed.difference_update(ids)
        else:
            await conn._send("INVALID OPERATION")

    async def _subscribe(self, conn: SimConnection, ids: list[str], dump: bool) -> None:
        known = [t for t in dict.fromkeys(ids) if t in self.engine.by_token]
        conn.subscribed.update(known)
        if not dump:
            return
        async with self._lock:  # a snapshot must not interleave with a flow batch
            books = [self.engine.book_msg(t, initial=True) for t in known
                     if self.engine.by_token[t].active]
            if len(conn.subscribed) > conn.faults.snapshot_ceiling:
                books = []
            await conn._send(orjson.dumps(books).decode())

    # --- flow ---------------------------------------------------------------------------
    async def _flow(self) -> None:
        owed = 0.0
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK if self.config.rate else 0)
            now = time.monotonic()
            owed += (now - last) * self.config.rate if self.config.rate else 200
            last = now
            if self._paused or owed < 1:
                owed = 0 if self._paused else owed
                continue
            n, owed = int(owed), owed - int(owed)
            async with self._lock:
                messages = self.engine.step(n)
                self.stats["actions"] += n
                await self._broadcast(messages)

    async def _broadcast(self, messages: list[dict[str, Any]]) -> None:
        """Send each message to the connections subscribed to a token it carries."""
        live = [c for c in self.connections if c.initialized and not c.closed]
        if not live or not messages:
            return
        rendered = [(m, _tokens_of(m), orjson.dumps(m).decode()) for m in messages]
        for conn in live:
            await self._deliver(conn, rendered)

    async def _deliver(self, conn: SimConnection, rendered: list[tuple[dict[str, Any],
                       tuple[str, ...], str]]) -> None:
        faults = conn.faults
        if faults.stall or len(conn.subscribed) > faults.ceiling:
            return
        frames: list[str] = []
        burst: list[dict[str, Any]] = []
        for msg, tokens, text in rendered:
            if not any(t in conn.subscribed for t in tokens):
                continue
            if faults.bursts:
                burst.append(msg)
                continue
            if faults.legacy and msg["event_type"] == "price_change":
                frames += [orjson.dumps(m).decode() for m in _legacy(msg, conn.subscribed)]
            elif faults.ts_regress and self._rng.random() < 0.1:
                older = dict(msg, timestamp=str(int(msg.get("timestamp", "0")) - 5))
                frames.append(orjson.dumps(older).decode())
            else:
                frames.append(text)
            if faults.duplicate and self._rng.random() < 0.2:
                frames.append(frames[-1])
            if faults.unknown and self._rng.random() < 0.02:
                mystery = [{"asset_id": tokens[0], "event_type": "mystery"}]
                frames.append(orjson.dumps(mystery).decode())
        if burst:
            frames.append(orjson.dumps(burst).decode())
        for text in frames:
            await conn._send(text)
        self.stats["frames"] += len(frames)

    async def _watch(self) -> None:
        """Close connections whose client has been silent too long (the exchange's timeout)."""
        limit = self.config.silence_timeout
        while limit:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            for conn in list(self.connections):
                if now - conn.last_rx > limit:
                    conn.drop()

    async def _lifecycle(self) -> None:
        cfg = self.config
        next_new = time.monotonic() + cfg.new_market_every if cfg.new_market_every else None
        next_res = time.monotonic() + cfg.resolve_every if cfg.resolve_every else None
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            messages = []
            if next_new is not None and now >= next_new:
                messages += self.engine.new_market()
                next_new = now + cfg.new_market_every
            if next_res is not None and now >= next_res:
                messages += self.engine.resolve()
                next_res = now + cfg.resolve_every
            if messages:
                await self.broadcast_lifecycle(messages)

    async def broadcast_lifecycle(self, messages: list[dict[str, Any]]) -> None:
        """new_market / market_resolved go to every custom-feature connection, subscribed or not."""
        async with self._lock:
            for conn in [c for c in self.connections if c.initialized and c.custom]:
                if conn.faults.stall:
                    continue
                for msg in messages:
                    await conn._send(orjson.dumps(msg).decode())


def _tokens_of(msg: dict[str, Any]) -> tuple[str, ...]:
    if msg["event_type"] == "price_change":
        return tuple(e["asset_id"] for e in msg["price_changes"])
    return (msg.get("asset_id", ""),)


def _legacy(msg: dict[str, Any], subscribed: set[str]) -> list[dict[str, Any]]:
    """The pre-2025-09-15 shape: one frame per asset with `changes`, no tops."""
    out = []
    for leg in msg["price_changes"]:
        if leg["asset_id"] in subscribed:
            out.append({"asset_id": leg["asset_id"],
                        "changes": [{"price": leg["price"], "side": leg["side"],
                                     "size": leg["size"]}],
                        "event_type": "price_change", "market": msg["market"],
                        "timestamp": msg["timestamp"], "hash": leg["hash"]})
    return out


def _response(status: HTTPStatus, body: bytes) -> Response:
    headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)

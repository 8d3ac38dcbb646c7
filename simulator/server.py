"""The simulated exchange: WebSocket market channel at /ws/market, order flow, fan-out.

`Simulator` ties the engine, the WebSocket server and the REST/Gamma server together and is
what tests drive: read the engine's truth, pause the flow, inject faults per connection.
Everything between generating an engine batch and writing its frames is synchronous, so
each connection sees events in engine order and `pause()` takes effect immediately.

The exchange's rules as of PROTOCOL.md §9 hold on every connection unless its `Faults` say
otherwise: a subscribe naming only held assets is answered `NO NEW ASSETS` (no book), a text
`PING` before the subscription closes the socket with 1008.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from urllib.parse import urlsplit

import orjson
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from polybus.simulator import frames
from polybus.simulator.config import SimConfig, SimStats
from polybus.simulator.connection import SimConnection
from polybus.simulator.engine import Engine
from polybus.simulator.faults import Faults
from polybus.simulator.frames import LIFECYCLE, Msg
from polybus.simulator.units import COARSE


__all__ = ["SimConfig", "SimConnection", "Simulator"]

log = structlog.get_logger()

BACKLOG = 1 * 2**20
"""At rate 0, flow waits while any subscriber has this much unsent data (backpressure)."""
RELEASE_EVERY = 0.005
"""Seconds between checks for held-back `last_trade_price`s that are due."""
NO_NEW_ASSETS = b"NO NEW ASSETS"
EARLY_PING = (1008, "invalid subscription payload")


class Simulator:
    """A faithful local Polymarket: engine + WS market channel + REST/Gamma twin."""

    def __init__(self, config: SimConfig | None = None) -> None:
        cfg = self.config = config or SimConfig()
        self.engine = Engine(
            cfg.markets,
            cfg.seed,
            v2_fraction=cfg.v2_fraction,
            new_market_every=self._steps(cfg.new_market_every),
            resolve_every=self._steps(cfg.resolve_every),
            sweep_share=cfg.sweep_share,
            ltp_delay_ms=cfg.ltp_delay_ms,
            odd_ticks=cfg.odd_ticks,
        )
        self.engine.sink = self._broadcast
        self.faults = Faults()
        """Fault flags copied into each NEW connection."""
        self.connections: list[SimConnection] = []
        self.stats = SimStats()
        self.ws_url = ""
        self.http_url = ""
        self._index: dict[str, set[SimConnection]] = {}
        self._ids = itertools.count(1)
        self._reject_left, self._reject_status = 0, HTTPStatus.TOO_MANY_REQUESTS
        self._close_left = 0
        self._close_code: int | None = 1000
        self._lose_next: frozenset[str] = frozenset()
        self._handshakes: collections.deque[float] = collections.deque()
        self._running = asyncio.Event()
        self._running.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._ws_server: Server | None = None
        self._http_server: asyncio.Server | None = None

    def _steps(self, seconds: float) -> int:
        """Lifecycle intervals in engine steps, so they are deterministic too (rate > 0)."""
        return max(1, round(seconds * self.config.rate)) if seconds > 0 and self.config.rate else 0

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0, http_port: int = 0) -> None:
        """Start both servers and the flow; port 0 picks a free port."""
        from polybus.simulator.http import HttpServer

        self._ws_server = await serve(
            self._handle,
            host,
            port,
            process_request=self._gate,
            compression=None,
            ping_interval=None,
            max_size=2**22,
            server_header="simulator",
        )
        ws_port = self._ws_server.sockets[0].getsockname()[1]
        self._http = HttpServer(self)
        self._http_server = await self._http.start(host, http_port)
        http_port = self._http_server.sockets[0].getsockname()[1]
        self.ws_url = f"ws://{host}:{ws_port}/ws/market"
        self.http_url = f"http://{host}:{http_port}"
        self._tasks = [
            asyncio.create_task(self._flow(), name="simulator.flow"),
            asyncio.create_task(self._watch(), name="simulator.watch"),
            asyncio.create_task(self._release(), name="simulator.release"),
        ]
        if not self.config.rate and (self.config.new_market_every or self.config.resolve_every):
            self._tasks.append(asyncio.create_task(self._lifecycle(), name="simulator.life"))
        log.info(
            "simulator.start",
            ws_url=self.ws_url,
            http_url=self.http_url,
            markets=len(self.engine.markets()),
            rate=self.config.rate,
        )

    async def stop(self) -> None:
        """Stop flow and servers; every connection is dropped."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.drop_all()
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws_server.wait_closed(), 2)
        if self._http_server is not None:
            await self._http.stop()
        log.info("simulator.stop", actions=self.stats.actions, frames=self.stats.frames)

    async def pause(self) -> None:
        """Stop generating flow; once this returns no new flow frames are produced: the
        `last_trade_price`s still held back from earlier trades go out now, early.

        (Trades a test makes with `engine.step` while paused get theirs on time.)"""
        self._running.clear()
        self.engine.flush()

    def resume(self) -> None:
        """Generate flow again."""
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # --- controls -----------------------------------------------------------------------
    def drop_all(self) -> None:
        """Abrupt drop of every live connection (no close frame; clients see 1006)."""
        for conn in list(self.connections):
            if not conn.closed:
                self.stats.dropped += 1
            conn.drop()

    def reject_handshakes(self, count: int, status: int = 429) -> None:
        """Refuse the next `count` WebSocket handshakes with this HTTP status."""
        self._reject_left, self._reject_status = count, HTTPStatus(status)

    def close_after_accept(self, count: int, code: int | None = 1000) -> None:
        """Complete the next `count` handshakes, then close at once: with a close frame of
        `code`, or abruptly (no close frame, the client sees 1006) when `code` is None."""
        self._close_left, self._close_code = count, code

    def lose_on_next_connection(self, tokens: Iterable[str]) -> None:
        """The next connection never delivers these tokens (see `Faults.lost`)."""
        self._lose_next = self._lose_next | frozenset(tokens)

    def lose(self, tokens: Iterable[str], conn_id: int | None = None) -> int:
        """Silently lose tokens on one live connection (by id) or on all; returns how many
        connections now lose them."""
        conns = [c for c in self.connections if conn_id is None or c.id == conn_id]
        for conn in conns:
            conn.lose(tokens)
        return len(conns)

    def set_faults(self, live: bool = True, **flags: object) -> None:
        """Set fault flags for new connections and, with `live`, on every live one too
        (`lost` may be any iterable of tokens). ValueError for an unknown flag."""
        unknown = [name for name in flags if not hasattr(self.faults, name)]
        if unknown:
            raise ValueError(f"no such fault: {', '.join(unknown)}")
        if "lost" in flags:
            flags["lost"] = frozenset(flags["lost"])  # type: ignore[call-overload]
        for target in [self.faults, *(c.faults for c in self.connections if live)]:
            for name, value in flags.items():
                setattr(target, name, value)

    def set_stall(self, on: bool) -> None:
        """Stall (or un-stall) every live connection."""
        for conn in self.connections:
            conn.faults.stall = on

    async def wait_connections(self, n: int, timeout: float = 10.0) -> None:
        """Wait until at least n connections are live and subscribed."""
        deadline = time.monotonic() + timeout
        while sum(1 for c in self.connections if c.initialized and c.live) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} subscribed connections did not appear in {timeout}s")
            await asyncio.sleep(0.005)

    # --- WebSocket side -----------------------------------------------------------------
    def _gate(self, conn: ServerConnection, request: Request) -> Response | None:
        """404 off the one path, 429 while rejecting; otherwise proceed with the handshake."""
        if urlsplit(request.path).path != "/ws/market":
            self.stats.not_found += 1
            return conn.respond(HTTPStatus.NOT_FOUND, "404 page not found\n")
        if self._reject_left > 0:
            self._reject_left -= 1
            return self._refuse(conn, self._reject_status)
        if self.config.handshake_limit:
            now, recent = time.monotonic(), self._handshakes
            while recent and now - recent[0] > 1.0:
                recent.popleft()
            if len(recent) >= self.config.handshake_limit:
                return self._refuse(conn, HTTPStatus.TOO_MANY_REQUESTS)
            recent.append(now)
        return None

    def _refuse(self, conn: ServerConnection, status: HTTPStatus) -> Response:
        self.stats.rejected += 1
        log.info("simulator.conn.rejected", status=status.value, left=self._reject_left)
        return conn.respond(status, f"{status.phrase}\n")

    async def _handle(self, ws: ServerConnection) -> None:
        self.stats.accepted += 1
        if self._close_left > 0:
            await self._close_at_once(ws)
            return
        conn = SimConnection(next(self._ids), ws, self.faults.copy())
        if self._lose_next:
            conn.lose(self._lose_next)
            self._lose_next = frozenset()
        self.connections.append(conn)
        log.info(
            "simulator.conn.open",
            conn_id=conn.id,
            remote=str(ws.remote_address),
            lost=len(conn.faults.lost),
        )
        try:
            async for message in ws:
                conn.last_rx = time.monotonic()
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                if (
                    not conn.initialized
                    and not conn.faults.early_ping_ok
                    and text.strip() == "PING"
                ):
                    self.stats.early_pings += 1
                    log.info("simulator.conn.early_ping", conn_id=conn.id)
                    await ws.close(*EARLY_PING)
                    break
                self._on_message(conn, text)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self.connections.remove(conn)
            log.info(
                "simulator.conn.close",
                conn_id=conn.id,
                frames=conn.frames_sent,
                assets=len(conn.subscribed),
            )
            self._forget(conn, set(conn.subscribed))

    async def _close_at_once(self, ws: ServerConnection) -> None:
        """An accepted handshake closed before anything else (what some proxies do)."""
        self._close_left -= 1
        self.stats.closed_at_accept += 1
        log.info("simulator.conn.close_at_accept", code=self._close_code, left=self._close_left)
        if self._close_code is None:
            ws.transport.abort()
        else:
            await ws.close(self._close_code, "closed at accept")

    def _on_message(self, conn: SimConnection, text: str) -> None:
        if text.strip() == "PING":
            conn.write([b"PONG"])  # stalled connections still answer: that is the trap
            return
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            msg = None
        ids = msg.get("assets_ids", []) if isinstance(msg, dict) else None
        if (
            not isinstance(msg, dict)
            or not isinstance(ids, list)
            or not all(isinstance(t, str) for t in ids)
        ):
            self._invalid(conn)
            return
        op = msg.get("operation")
        if op is None and str(msg.get("type", "")).lower() == "market" and not conn.initialized:
            conn.initialized = True
            conn.custom = msg.get("custom_feature_enabled") is True
            self._subscribe(conn, ids, msg.get("initial_dump", True) is not False)
        elif op == "subscribe" and conn.initialized:
            conn.custom = conn.custom or msg.get("custom_feature_enabled") is True
            self._subscribe(conn, ids, msg.get("initial_dump", True) is not False, dynamic=True)
        elif op == "unsubscribe" and conn.initialized:
            self._forget(conn, set(ids))
        else:  # a second `type: market`, or anything else
            self._invalid(conn)

    def _invalid(self, conn: SimConnection) -> None:
        self.stats.invalid += 1
        conn.write([b"INVALID OPERATION"])

    def _subscribe(
        self, conn: SimConnection, ids: list[str], dump: bool, dynamic: bool = False
    ) -> None:
        """Add known active assets; with `dump`, one array frame of the books of the assets
        new on this connection (`[]` if none). A dynamic subscribe naming only held assets
        gets the text `NO NEW ASSETS` instead; lost tokens get nothing at all."""
        named = list(dict.fromkeys(ids))
        held = [t for t in named if t in conn.subscribed]
        if dynamic and named and len(held) == len(named) and not conn.faults.resnapshot:
            self.stats.no_new_assets += 1
            conn.write([NO_NEW_ASSETS])
            return
        fresh = []
        for token in named:
            market = self.engine.market(token)
            if market is None or not market.active:
                continue
            if token in conn.subscribed and not conn.faults.resnapshot:
                continue
            fresh.append(token)
            conn.subscribed.add(token)
            self._index.setdefault(token, set()).add(conn)
        if dynamic and conn.faults.lose_new:
            conn.lose(fresh)
        elif dynamic and conn.faults.rescue > 0:
            rng, odds = conn.shaper.rng, conn.faults.rescue
            saved = {t for t in fresh if t in conn.faults.lost and rng.random() < odds}
            conn.faults.lost = conn.faults.lost - saved
        lost = conn.faults.lost
        log.info(
            "simulator.conn.subscribe",
            conn_id=conn.id,
            asked=len(ids),
            new=len(fresh),
            total=len(conn.subscribed),
            custom=conn.custom,
            lost=sum(1 for t in fresh if t in lost),
        )
        if not dump or conn.faults.stall or len(conn.subscribed) > conn.faults.snapshot_ceiling:
            return
        books = [self.engine.book_msg(t, initial=True) for t in fresh if t not in lost]
        if not books and any(t in lost for t in fresh):
            return  # silence: not even the `[]` an unknown id gets
        self.stats.frames += conn.write([frames.render(books)])
        self.stats.snapshots += 1

    def _forget(self, conn: SimConnection, tokens: set[str]) -> None:
        for token in tokens & conn.subscribed:
            conn.subscribed.discard(token)
            subscribers = self._index.get(token)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self._index[token]

    # --- flow ---------------------------------------------------------------------------
    async def _flow(self) -> None:
        """Generate `rate` actions per second in small batches (or flat out at rate 0)."""
        cfg, loop = self.config, asyncio.get_running_loop()
        owed, last = 0.0, loop.time()
        while True:
            if not self._running.is_set():
                await self._running.wait()
                owed, last = 0.0, loop.time()
            if cfg.rate > 0:
                await asyncio.sleep(cfg.batch_interval)
                now = loop.time()
                # Cap the debt so a long GC pause or a busy loop cannot unleash a flood.
                owed, last = min(owed + (now - last) * cfg.rate, cfg.rate * 0.25 + 1), now
                n = int(owed)
                owed -= n
            else:
                await asyncio.sleep(0)
                if any(c.buffered() > BACKLOG for c in self.connections if c.subscribed):
                    await asyncio.sleep(0.001)
                    continue
                n = cfg.max_batch
            if n and self._running.is_set():
                self.engine.step(n)
                self.stats.actions += n

    def _broadcast(self, msgs: list[Msg]) -> None:
        """Engine sink: send each message, rendered once, to every connection that wants it."""
        self.stats.messages += len(msgs)
        conns = [c for c in self.connections if c.initialized and not c.muted and c.live]
        if not conns:
            return
        wanted = _route(msgs, self._index, conns)
        rendered: list[bytes | None] = [None] * len(msgs)
        for conn, indices in wanted.items():
            if conn.muted or conn.closed:
                continue
            texts = []
            for i in indices:
                text = rendered[i]
                if text is None:
                    text = rendered[i] = frames.render(msgs[i])
                texts.append(text)
            if conn.faults.shaping():
                texts = self._shape(
                    conn, [(msgs[i], t) for i, t in zip(indices, texts, strict=True)]
                )
            self.stats.frames += conn.write(texts)

    def _shape(self, conn: SimConnection, items: list[tuple[Msg, bytes]]) -> list[bytes]:
        faults, shaper = conn.faults, conn.shaper
        if faults.crossed and shaper.rng.random() < faults.odds:
            items = items + self._crossed(shaper.rng.getrandbits, items)
        if faults.stuck_cross > 0:
            flash = self._crossed(shaper.rng.getrandbits, items)[:1]  # never its fix
            if flash:
                faults.stuck_cross -= 1
                items = items + flash
        return shaper.shape(faults, items, conn.subscribed, self._tick_of)

    def _tick_of(self, token: str) -> int:
        market = self.engine.market(token)
        return market.tick if market is not None else COARSE

    def _crossed(
        self, bits: Callable[[int], int], items: list[tuple[Msg, bytes]]
    ) -> list[tuple[Msg, bytes]]:
        """A crossed flash and its fix on the batch's last market, appended at the batch end,
        where the engine state is the state the client's stream has reached."""
        for msg, _ in reversed(items):
            tokens = frames.tokens_of(msg)
            market = self.engine.market(tokens[0]) if tokens else None
            if market is not None and market.active:
                break
        else:
            return []
        a, b, c, d = (f"{bits(160):040x}" for _ in range(4))
        pair = frames.crossed_pair(market, str(self.engine.clock()), (a, b, c, d))
        return [(m, frames.render(m)) for m in pair]

    async def _watch(self) -> None:
        """Close connections whose client has been silent too long (the exchange's timeout)."""
        limit = self.config.silence_timeout
        while limit > 0:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            for conn in list(self.connections):
                if not conn.closed and now - conn.last_rx > limit:
                    log.info("simulator.conn.silence", conn_id=conn.id, limit_s=limit)
                    self.stats.silenced += 1
                    conn.drop()

    async def _release(self) -> None:
        """Send held-back `last_trade_price`s once due, also while the flow is paused or slow
        (at any real rate the flow's own steps release most of them first)."""
        engine = self.engine
        while True:
            await asyncio.sleep(RELEASE_EVERY)
            if engine.pending:
                engine.release()

    async def _lifecycle(self) -> None:
        """At rate 0 there is no step clock: new markets and resolutions run on a timer."""
        cfg, loop = self.config, asyncio.get_running_loop()
        start = loop.time()
        due_new = start + cfg.new_market_every if cfg.new_market_every else float("inf")
        due_res = start + cfg.resolve_every if cfg.resolve_every else float("inf")
        while True:
            await asyncio.sleep(max(0.001, min(due_new, due_res) - loop.time()))
            if not self._running.is_set():
                continue
            now = loop.time()
            if now >= due_new:
                self.engine.new_market()
                due_new = now + cfg.new_market_every
            if now >= due_res:
                self.engine.resolve()
                due_res = now + cfg.resolve_every


def _route(
    msgs: list[Msg], index: dict[str, set[SimConnection]], conns: list[SimConnection]
) -> dict[SimConnection, list[int]]:
    """Which message indices each connection gets: by subscription, lifecycle to all custom."""
    wanted: dict[SimConnection, list[int]] = {}
    custom = [c for c in conns if c.custom]
    for i, msg in enumerate(msgs):
        kind = msg["event_type"]
        if kind in LIFECYCLE:
            for conn in custom:
                wanted.setdefault(conn, []).append(i)
            continue
        bba = kind == "best_bid_ask"
        changes = msg.get("price_changes")
        tokens = (changes[0]["asset_id"], changes[1]["asset_id"]) if changes else (msg["asset_id"],)
        for token in tokens:
            for conn in index.get(token, ()):
                if bba and not conn.custom:
                    continue
                got = wanted.get(conn)
                if got is None:
                    wanted[conn] = [i]
                elif got[-1] != i:
                    got.append(i)
    return wanted

"""One market-channel connection (a shard of at most WS_TOKENS_PER_CONNECTION tokens).

It owns its socket's whole life: connect with capped exponential backoff and full jitter,
subscribe every token with `initial_dump` and `custom_feature_enabled`, text `PING` with a
`PONG` deadline, a data-silence deadline, optional recycling, a snapshot deadline per
subscribe, and in-band `status` entries whenever continuity breaks. It moves bytes and events
only; parsing is the Normalizer's, book checks the Mirror's, Redis the publisher's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from feeder.config import FeederConfig
from feeder.mirror import Mirror
from feeder.normalize import Normalizer
from feeder.outbox import Outbox
from feeder.recorder import Recorder
from wire.errors import HandshakeRejected, UpstreamError
from wire.events import Book, ConnectionState, MarketEvent, Status


__all__ = ["Connection", "backoff_delay"]

log = structlog.get_logger("feeder.connection")

MAX_FRAME = 32 * 1024 * 1024
"""The initial snapshot is one frame that grows with the token count."""

SNAPSHOT_RETRIES = 3


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform(0, min(base * 2^(attempt-1), cap))."""
    return rng.uniform(0.0, min(base * 2 ** max(attempt - 1, 0), cap))


@dataclass(slots=True)
class ConnStats:
    """Counters one connection keeps for health and metrics."""

    frames: int = 0
    events: int = 0
    connects: int = 0
    reconnects: int = 0
    resubscribes: int = 0
    rejected: int = 0
    pong_latency: float = 0.0
    last_reason: str = ""


class Connection:
    """A shard: its tokens, its socket, and its reconnect loop."""

    def __init__(
        self,
        cid: int,
        tokens: list[str],
        config: FeederConfig,
        outbox: Outbox,
        mirror: Mirror,
        next_epoch: Callable[[], int],
        *,
        connect: Callable[..., Any] = ws_connect,
        rng: random.Random | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.cid = cid
        self.tokens: list[str] = list(dict.fromkeys(tokens))
        self.config = config
        self.outbox = outbox
        self.mirror = mirror
        self.next_epoch = next_epoch
        self.connect = connect
        self.rng = rng or random.Random()
        self.recorder = recorder
        self.state = ConnectionState.DISCONNECTED
        self.epoch = 0
        self.stats = ConnStats()
        self.normalizer = Normalizer(self.tokens)
        self.last_data = 0.0
        self.last_pong = 0.0
        self._got_data = False
        self._awaiting: dict[str, int] = {}
        self._awaiting_since = 0.0
        self._resync: dict[str, str] = {}
        self._ops: list[tuple[str, list[str]]] = []
        self.on_market: Callable[[MarketEvent], None] | None = None
        """Called with each lifecycle event this connection sees first (deduplicated)."""
        self._wake = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._ping_sent = 0.0
        self._opened = 0.0

    # --- public -----------------------------------------------------------------------
    def add_tokens(self, tokens: list[str]) -> list[str]:
        """Carry more tokens: subscribed on the live socket now, or with the next connect."""
        new = [t for t in dict.fromkeys(tokens) if t not in self.normalizer.tokens]
        if new:
            self.tokens.extend(new)
            self.normalizer.subscribe(new)
            self._ops.append(("subscribe", new))
            self._wake.set()
        return new

    def remove_tokens(self, tokens: list[str], reason: str) -> list[str]:
        """Stop carrying tokens; their books turn `retired` (no longer updated) and expire."""
        gone = [t for t in dict.fromkeys(tokens) if t in self.normalizer.tokens]
        if gone:
            dropped = set(gone)
            self.tokens = [t for t in self.tokens if t not in dropped]
            self.normalizer.unsubscribe(gone)
            self.mirror.unsync(gone)
            for token in gone:
                self._awaiting.pop(token, None)
            self._ops.append(("unsubscribe", gone))
            ttl = str(int(self.config.retired_ttl * 1000))  # then its keys expire
            self.outbox.put_nowait([Status(t, "retired", reason, ttl_ms=ttl) for t in gone],
                                   self.epoch, _now_us())
            self._wake.set()
        return gone

    def request_resync(self, tokens: list[str], reason: str) -> None:
        """Mark tokens suspect and fetch fresh snapshots (unsubscribe + subscribe)."""
        for token in tokens:
            self._resync[token] = reason
        self._wake.set()

    @property
    def live(self) -> bool:
        """True while a socket is open and subscribed."""
        return self._ws is not None

    @property
    def silence(self) -> float:
        """Seconds since the last data frame (0 when never connected)."""
        return asyncio.get_running_loop().time() - self.last_data if self.last_data else 0.0

    async def run(self) -> None:
        """Connect, serve, reconnect — forever, or until the attempt limit is exceeded."""
        attempt, first = 0, True
        while True:
            self.state = ConnectionState.CONNECTING if first else ConnectionState.RECONNECTING
            retry_after = 0.0
            try:
                ws = await self._open()
            except HandshakeRejected as exc:
                self.stats.rejected += 1
                retry_after = max(exc.retry_after or 0.0, self.config.rate_limit_delay)
                self._failed(f"http_{exc.status}")
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self._failed(type(exc).__name__)
            else:
                self._got_data = False
                reason = await self._session(ws, first)
                first = False
                if self._got_data:  # reset only after real data, not on TCP connect
                    attempt = 0
                self._failed(reason)
            attempt += 1
            limit = self.config.reconnect_attempts
            if limit and attempt > limit:
                self.state = ConnectionState.FAILED
                raise UpstreamError(f"connection {self.cid}: {limit} reconnect attempts exceeded")
            delay = backoff_delay(attempt, self.config.reconnect_base_delay,
                                  self.config.reconnect_max_delay, self.rng)
            delay = max(delay, retry_after)
            log.info("feeder.ws.retry", conn=self.cid, attempt=attempt, delay=round(delay, 3),
                     reason=self.stats.last_reason)
            await asyncio.sleep(delay)

    # --- connection life ------------------------------------------------------------------
    async def _send(self, ws: ClientConnection, text: str) -> None:
        if self.recorder is not None:
            self.recorder.tx(self.cid, text)
        await ws.send(text)

    async def _op(self, ws: ClientConnection, operation: str, tokens: list[str]) -> None:
        """A dynamic (un)subscribe on the live socket: no `type`, no ack."""
        frame: dict[str, object] = {"operation": operation, "assets_ids": tokens}
        if operation == "subscribe":
            frame["custom_feature_enabled"] = True
        await self._send(ws, orjson.dumps(frame).decode())

    def _failed(self, reason: str) -> None:
        self.stats.last_reason = reason
        if self.state is not ConnectionState.CONNECTING:
            self.state = ConnectionState.RECONNECTING

    async def _open(self) -> ClientConnection:
        try:
            ws: ClientConnection = await self.connect(
                self.config.ws_url, ping_interval=None, compression=None, max_size=MAX_FRAME,
                open_timeout=10, close_timeout=1, user_agent_header="polybus",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 429:
                header = exc.response.headers.get("Retry-After", "")
                retry = float(header) if header.replace(".", "", 1).isdigit() else None
                raise HandshakeRejected(status, retry) from exc
            raise
        return ws

    async def _session(self, ws: ClientConnection, first: bool) -> str:
        """Serve one socket until it fails; return why it ended."""
        loop = asyncio.get_running_loop()
        self._ws = ws
        self.epoch = epoch = self.next_epoch()
        self.normalizer = Normalizer(self.tokens)
        self.stats.connects += 1
        if self.recorder is not None:
            self.recorder.event(self.cid, "open", url=self.config.ws_url, epoch=epoch)
        if not first:
            self.stats.reconnects += 1
        self.state = ConnectionState.CONNECTED
        await self._send(ws, orjson.dumps({"type": "market", "assets_ids": self.tokens,
                                    "custom_feature_enabled": True,
                                    "initial_dump": True}).decode())
        self.state = ConnectionState.SUBSCRIBED
        now = loop.time()
        self.last_data = self.last_pong = self._opened = now
        self._awaiting = dict.fromkeys(self.tokens, 0)
        self._awaiting_since = now
        self._resync.clear()
        self._ops.clear()  # the subscribe frame above already holds every current token
        state = "connected" if first else "resubscribed"
        self.outbox.put_nowait([Status(t, state, f"epoch {epoch}") for t in self.tokens],
                               epoch, _now_us())
        log.info("feeder.ws.subscribed", conn=self.cid, epoch=epoch, tokens=len(self.tokens))
        tasks = {asyncio.create_task(self._read(ws, epoch)), asyncio.create_task(self._keep(ws))}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the feeder is stopping: nobody vouches for the books
            await self._ended(ws, tasks, epoch, "shutdown")
            raise
        return await self._ended(ws, tasks, epoch, "")

    async def _ended(self, ws: ClientConnection, tasks: set[asyncio.Task[str]], epoch: int,
                     why: str) -> str:
        """Tear the socket down and say so in band; return the reason."""
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        _abort(ws)
        self._ws = None
        reason = why or next((r for r in results if isinstance(r, str)), "")
        if not reason:
            err = next((r for r in results if isinstance(r, BaseException)
                        and not isinstance(r, asyncio.CancelledError)), None)
            reason = f"error:{type(err).__name__}" if err else "closed"
            if err is not None:
                log.error("feeder.ws.error", conn=self.cid, error=repr(err))
        if self.recorder is not None:
            self.recorder.event(self.cid, "close", reason=reason, epoch=epoch)
        self.mirror.unsync(self.tokens)
        self.outbox.put_nowait([Status(t, "disconnected", reason) for t in self.tokens],
                               epoch, _now_us())
        self.state = ConnectionState.RECONNECTING
        level = log.info if reason == "shutdown" else log.warning
        level("feeder.ws.dropped", conn=self.cid, epoch=epoch, reason=reason,
              frames=self.stats.frames)
        return reason

    async def _read(self, ws: ClientConnection, epoch: int) -> str:
        """Feed every frame through normalizer and mirror into the outbox."""
        loop = asyncio.get_running_loop()
        norm, mirror, outbox, stats = self.normalizer, self.mirror, self.outbox, self.stats
        recorder = self.recorder
        try:
            async for raw in ws:
                rx = time.time_ns() // 1000
                if recorder is not None:
                    recorder.rx(self.cid, rx, raw)
                out = norm.feed(raw, rx)
                stats.frames += 1
                if out.pong:
                    now = loop.time()
                    stats.pong_latency = now - self._ping_sent if self._ping_sent else 0.0
                    self.last_pong = now
                if out.data:
                    self.last_data = loop.time()
                    self._got_data = True
                if out.events:
                    events, bad = mirror.apply(out.events)
                    stats.events += len(events)
                    if self._awaiting:
                        self._snapshots_seen(events)
                    await outbox.put(events, epoch, rx)
                    if bad:
                        self.request_resync(bad, "bbo_mismatch")
                for text, reason in out.quarantine:
                    outbox.quarantine(text, reason, rx)
                for market in out.markets:
                    if outbox.market(market, rx) and self.on_market is not None:
                        self.on_market(market)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            return f"closed:{code}"
        return "closed"

    def _snapshots_seen(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, Book):
                self._awaiting.pop(event.asset_id, None)

    async def _keep(self, ws: ClientConnection) -> str:
        """Heartbeat and deadlines; return the reason when the socket must be dropped."""
        cfg, loop = self.config, asyncio.get_running_loop()
        tick = min(1.0, cfg.ping_interval / 2)
        next_ping = loop.time() + cfg.ping_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)
            self._wake.clear()
            now = loop.time()
            if now >= next_ping:
                await self._send(ws, "PING")
                self._ping_sent, next_ping = now, now + cfg.ping_interval
            if now - self.last_pong > cfg.pong_timeout:
                return "pong_timeout"
            if now - self.last_data > cfg.silence_timeout:
                return "data_silence"
            if cfg.recycle_interval and now - self._opened > cfg.recycle_interval:
                return "recycle"
            if self._ops:
                await self._send_ops(ws)
            if self._resync:
                await self._send_resync(ws)
            if self._awaiting and now - self._awaiting_since > cfg.snapshot_timeout:
                await self._retry_snapshots(ws, now)

    async def _send_ops(self, ws: ClientConnection) -> None:
        """Send queued dynamic subscribes/unsubscribes (no ack exists; books prove them)."""
        ops, self._ops = self._ops, []
        for operation, tokens in ops:
            if operation == "subscribe":
                if not self._awaiting:
                    self._awaiting_since = asyncio.get_running_loop().time()
                for token in tokens:
                    self._awaiting.setdefault(token, 0)
                self.outbox.put_nowait([Status(t, "connected", "subscribe") for t in tokens],
                                       self.epoch, _now_us())
            await self._op(ws, operation, tokens)
        log.info("feeder.ws.operations", conn=self.cid, ops=[(o, len(t)) for o, t in ops])

    async def _send_resync(self, ws: ClientConnection) -> None:
        requests, self._resync = self._resync, {}
        tokens = [t for t in requests if t in self.normalizer.tokens]
        if not tokens:
            return
        self.mirror.unsync(tokens)
        self.outbox.put_nowait([Status(t, "suspect", requests[t]) for t in tokens],
                               self.epoch, _now_us())
        await self._op(ws, "unsubscribe", tokens)
        await self._op(ws, "subscribe", tokens)
        self.stats.resubscribes += 1
        if not self._awaiting:
            self._awaiting_since = asyncio.get_running_loop().time()
        for token in tokens:
            self._awaiting.setdefault(token, 0)
        log.info("feeder.ws.resync", conn=self.cid, tokens=len(tokens),
                 reason=sorted(set(requests.values())))

    async def _retry_snapshots(self, ws: ClientConnection, now: float) -> None:
        """No ack exists: a subscribe without a `book` in time is sent again, a few times."""
        retry = [t for t, n in self._awaiting.items() if n < SNAPSHOT_RETRIES]
        given_up = [t for t, n in self._awaiting.items() if n >= SNAPSHOT_RETRIES]
        for token in given_up:
            del self._awaiting[token]
        if given_up:
            log.warning("feeder.subscribe.no_snapshot", conn=self.cid, tokens=len(given_up),
                        sample=given_up[:3])
        if retry:
            for token in retry:
                self._awaiting[token] += 1
            await self._op(ws, "subscribe", retry)
            self.stats.resubscribes += 1
        self._awaiting_since = now


def _now_us() -> int:
    return time.time_ns() // 1000


def _abort(ws: ClientConnection) -> None:
    """Drop the socket at once: a dead peer would make a closing handshake wait."""
    transport = getattr(ws, "transport", None)
    if transport is not None:
        transport.abort()

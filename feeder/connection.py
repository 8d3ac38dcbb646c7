"""One market-channel connection (a shard of at most WS_TOKENS_PER_CONNECTION tokens).

It owns its socket's whole life: connect with capped exponential backoff and full jitter,
send the subscription as the first frame, text `PING` with a `PONG` deadline (the first PING
only after subscribing: one before it gets the socket closed, 1008), a data-silence deadline
fed by data frames only, make-before-break recycling, and in-band `status` entries. What to
subscribe, when a first book is late and what each token's status is belongs to the pure
`Subscriptions` machine; this shell carries out its `Actions`. Parsing is the Normalizer's,
book checks the Mirror's, REST the RestBooks', Redis the publisher's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from polybus.feeder.config import FeederConfig
from polybus.feeder.mirror import Mirror
from polybus.feeder.normalize import Normalizer
from polybus.feeder.outbox import Outbox
from polybus.feeder.recorder import Recorder
from polybus.feeder.rest import RestBooks, parse_books
from polybus.feeder.subscriptions import Actions, Subscriptions
from polybus.wire.errors import HandshakeRejected, UpstreamError
from polybus.wire.events import Book, ConnectionState, Event, MarketEvent


__all__ = ["Connection", "backoff_delay"]

log = structlog.get_logger("feeder.connection")

MAX_FRAME = 32 * 1024 * 1024
"""The initial snapshot is one frame that grows with the token count."""
YIELD_EVERY = 8
"""Frames a reader handles before it lets the loop run others. websockets hands over every
frame already received without suspending, so a reader behind by a socket buffer (a stall,
a burst, a hundred connections' snapshots at start) would otherwise hold the loop for all of
it, and the lease renewal, PINGs and other sockets' handshakes would miss their deadlines."""


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform(0, min(base * 2^(attempt-1), cap))."""
    # The exponent is capped: 2 ** 1024 overflows a float, and reconnects are unlimited.
    return rng.uniform(0.0, min(base * 2 ** min(max(attempt - 1, 0), 60), cap))


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
        rest: RestBooks | None = None,
        adopting: tuple[str, ...] | list[str] = (),
        moved: bool = False,
        counts: Counter[str] | None = None,
    ) -> None:
        self.cid = cid
        self.config = config
        self.outbox = outbox
        self.mirror = mirror
        self.next_epoch = next_epoch
        self.connect = connect
        self.rng = rng or random.Random()
        self.recorder = recorder
        self.rest = rest
        self.subs = Subscriptions(
            tokens, snapshot_timeout=config.snapshot_timeout, adopting=adopting, moved=moved
        )
        self.normalizer = Normalizer(self.subs.tokens)
        if counts is not None:  # the feeder's counters outlive connections: never go backwards
            self.normalizer.counts = counts
        self.state = ConnectionState.DISCONNECTED
        self.epoch = 0
        self.stats = ConnStats()
        self.last_data = 0.0
        self.last_pong = 0.0
        self.retiring = False
        """Recycled: its successor adopts its tokens, then it closes for good."""
        self.successor: Connection | None = None
        self.on_market: Callable[[MarketEvent], None] | None = None
        """Called with each lifecycle event this connection sees first (deduplicated)."""
        self.on_move: Callable[[Connection, list[str]], None] | None = None
        """Rung 3: these tokens need a fresh connection."""
        self.on_adopted: Callable[[Connection, list[str]], None] | None = None
        """This connection took these tokens over: whoever had them must release them."""
        self.on_recycle: Callable[[Connection], None] | None = None
        """Time to be replaced: the feeder starts a successor adopting every token."""
        self._got_data = False
        self._wake = asyncio.Event()
        self._frames: list[str] = []
        self._ws: ClientConnection | None = None
        self._ping_sent = 0.0
        self._recycle_at = math.inf
        self._rest_tasks: set[asyncio.Task[None]] = set()
        if adopting:
            self._record("adopt", tokens=list(adopting), moved=moved)

    # --- public -----------------------------------------------------------------------
    @property
    def tokens(self) -> list[str]:
        """Every token subscribed here: owned, then being adopted."""
        return self.subs.tokens

    @property
    def owned(self) -> list[str]:
        """The tokens whose events this connection publishes."""
        return list(self.subs.owned)

    @property
    def live(self) -> bool:
        """True while a socket is open and subscribed."""
        return self._ws is not None

    @property
    def silence(self) -> float:
        """Seconds since the last data frame (0 when never connected)."""
        return time.monotonic() - self.last_data if self.last_data else 0.0

    def add_tokens(self, tokens: list[str]) -> list[str]:
        """Carry more tokens: subscribed on the live socket now, or with the next connect."""
        before = set(self.subs.tokens)
        self._do(self.subs.add(tokens, time.monotonic()))
        return [t for t in dict.fromkeys(tokens) if t not in before and t in self.subs.owned]

    def remove_tokens(self, tokens: list[str], reason: str) -> list[str]:
        """Stop carrying tokens; their books turn `retired` (no longer updated) and expire."""
        gone = [t for t in dict.fromkeys(tokens) if t in self.subs.owned or t in self.subs.adopting]
        if gone:
            ttl = str(int(self.config.retired_ttl * 1000))  # then its keys expire
            self._record("remove", tokens=gone, reason=reason, state="retired", ttl_ms=ttl)
            self.mirror.unsync([t for t in gone if t in self.subs.owned])
            self._do(self.subs.remove(gone, reason, "retired", ttl))
        return gone

    def request_resync(self, tokens: list[str], reason: str) -> None:
        """Mark owned books suspect and fetch fresh snapshots (the ladder from rung 1)."""
        mine = [t for t in dict.fromkeys(tokens) if t in self.subs.owned]
        if not mine:
            return
        self._record("resync", tokens=mine, reason=reason)
        self.mirror.unsync(mine)
        actions = self.subs.resync(mine, reason, time.monotonic())
        if actions.frames:
            self.stats.resubscribes += 1
            log.info("feeder.ws.resync", conn=self.cid, tokens=len(mine), reason=reason)
        self._do(actions)

    def adopt(self, tokens: list[str], *, moved: bool = False) -> None:
        """Subscribe tokens another connection owns; take each over at its first book."""
        self._record("adopt", tokens=tokens, moved=moved)
        self._do(self.subs.adopt(tokens, time.monotonic(), moved=moved))

    def release(self, tokens: list[str]) -> None:
        """Another connection took these tokens over: stop publishing them, quietly."""
        mine = [t for t in tokens if t in self.subs.owned]
        if mine:
            self._record("release", tokens=mine)
            self._do(self.subs.release(mine))
            self._wake.set()  # a retiring connection closes once it holds nothing

    def claim(self, tokens: list[str]) -> None:
        """Own tokens being adopted now, book or not (their old connection is gone)."""
        self._record("claim", tokens=tokens)
        self._do(self.subs.claim(tokens, time.monotonic()))

    async def run(self) -> None:
        """Connect, serve, reconnect — until retired, or the attempt limit is exceeded."""
        attempt = 0
        while True:
            self.state = (
                ConnectionState.CONNECTING
                if not self.subs.sessions
                else ConnectionState.RECONNECTING
            )
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
                reason = await self._session(ws)
                if self._got_data:  # reset only after real data, not on TCP connect
                    attempt = 0
                self._failed(reason)
                if self.retiring:
                    self._hand_over()
                    return
            attempt += 1
            limit = self.config.reconnect_attempts
            if limit and attempt > limit:
                self.state = ConnectionState.FAILED
                raise UpstreamError(f"connection {self.cid}: {limit} reconnect attempts exceeded")
            delay = backoff_delay(
                attempt, self.config.reconnect_base_delay, self.config.reconnect_max_delay, self.rng
            )
            delay = max(delay, retry_after)
            log.info(
                "feeder.ws.retry",
                conn=self.cid,
                attempt=attempt,
                delay=round(delay, 3),
                reason=self.stats.last_reason,
            )
            await asyncio.sleep(delay)

    # --- carrying out the machine's actions -------------------------------------------------
    def _do(self, actions: Actions) -> None:
        if actions.statuses:
            self.outbox.put_nowait(list[Event](actions.statuses), self.epoch, _now_us())
        self._sync_normalizer(actions.subscribed)
        if actions.frames and self._ws is not None:
            self._frames += actions.frames
            self._wake.set()
        if actions.rest:
            log.info(
                "feeder.ladder.rest",
                conn=self.cid,
                tokens=len(actions.rest),
                sample=actions.rest[:3],
            )
            if self.rest is not None and self._ws is not None:
                task = asyncio.create_task(self._fetch_rest(actions.rest))
                self._rest_tasks.add(task)
                task.add_done_callback(self._rest_tasks.discard)
        if actions.move:
            log.info(
                "feeder.ladder.move",
                conn=self.cid,
                tokens=len(actions.move),
                sample=actions.move[:3],
            )
            if self.on_move is not None:
                self.on_move(self, actions.move)
        if actions.adopted and self.on_adopted is not None:
            self.on_adopted(self, actions.adopted)
        if actions.gave_up:
            log.warning(
                "feeder.subscribe.no_snapshot",
                conn=self.cid,
                tokens=len(actions.gave_up),
                sample=actions.gave_up[:3],
            )

    def _sync_normalizer(self, subscribed: list[str]) -> None:
        """The normalizer accepts exactly what is subscribed; a token just re-subscribed
        starts a fresh duplicate window, so the snapshot asked for is never dropped as a
        repeat of an identical earlier one."""
        norm = self.normalizer
        want = set(self.subs.tokens)
        gone = norm.tokens - want
        again = [t for t in subscribed if t in norm.tokens]
        if gone or again:
            norm.unsubscribe([*gone, *again])
        new = want - norm.tokens
        if new:
            norm.subscribe(new)

    def _record(self, kind: str, **fields: Any) -> None:
        """Machine inputs go into a recording too, so a replay drives the same machine."""
        if self.recorder is not None:
            self.recorder.event(self.cid, kind, **fields)

    def _hand_over(self) -> None:
        """A retiring connection's socket is gone: its successor owns what is left."""
        left = self.owned
        if left and self.successor is not None:
            self.successor.claim(left)
        self.subs = Subscriptions(snapshot_timeout=self.config.snapshot_timeout)
        self.state = ConnectionState.DISCONNECTED

    def _recycle(self) -> None:
        self._recycle_at = math.inf
        if self.on_recycle is None or self.retiring:
            return
        self.retiring = True
        log.info("feeder.ws.recycle", conn=self.cid, tokens=len(self.subs.tokens))
        self.on_recycle(self)

    # --- connection life ------------------------------------------------------------------
    async def _send(self, ws: ClientConnection, text: str) -> None:
        if self.recorder is not None:
            self.recorder.tx(self.cid, text)
        await ws.send(text)

    async def _flush(self, ws: ClientConnection) -> None:
        while self._frames:
            await self._send(ws, self._frames.pop(0))

    def _failed(self, reason: str) -> None:
        self.stats.last_reason = reason
        if self.state is not ConnectionState.CONNECTING:
            self.state = ConnectionState.RECONNECTING

    async def _open(self) -> ClientConnection:
        try:
            ws: ClientConnection = await self.connect(
                self.config.ws_url,
                ping_interval=None,
                compression=None,
                max_size=MAX_FRAME,
                open_timeout=10,
                close_timeout=1,
                user_agent_header="polybus",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 429:
                header = exc.response.headers.get("Retry-After", "")
                retry = float(header) if header.replace(".", "", 1).isdigit() else None
                raise HandshakeRejected(status, retry) from exc
            raise
        return ws

    async def _session(self, ws: ClientConnection) -> str:
        """Serve one socket until it fails; return why it ended."""
        self._ws = ws
        self.epoch = epoch = self.next_epoch()
        self._frames.clear()
        self.stats.connects += 1
        if self.subs.sessions:
            self.stats.reconnects += 1
        if self.recorder is not None:
            self.recorder.event(self.cid, "open", url=self.config.ws_url, epoch=epoch, machine=1)
        now = time.monotonic()
        self.last_data = self.last_pong = now
        if self.config.recycle_interval > 0 and not self.retiring:
            jitter = self.rng.uniform(0.9, 1.1)  # phased: shards never recycle together
            self._recycle_at = now + self.config.recycle_interval * jitter
        self.state = ConnectionState.CONNECTED
        self._do(self.subs.opened(now, epoch))  # the subscription is the first frame
        tasks: set[asyncio.Task[str]] = set()
        try:
            await self._flush(ws)
            self.state = ConnectionState.SUBSCRIBED
            log.info(
                "feeder.ws.subscribed", conn=self.cid, epoch=epoch, tokens=len(self.subs.tokens)
            )
            tasks = {
                asyncio.create_task(self._read(ws, epoch)),
                asyncio.create_task(self._keep(ws)),
            }
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the feeder is stopping: nobody vouches for the books
            await self._ended(ws, tasks, epoch, "shutdown")
            raise
        except ConnectionClosed as exc:  # accepted, then closed before we could subscribe
            return await self._ended(ws, tasks, epoch, _closed(exc))
        except OSError as exc:
            return await self._ended(ws, tasks, epoch, f"error:{type(exc).__name__}")
        return await self._ended(ws, tasks, epoch, "")

    async def _ended(
        self, ws: ClientConnection, tasks: set[asyncio.Task[str]], epoch: int, why: str
    ) -> str:
        """Tear the socket down and say so in band; return the reason."""
        waits = [*tasks, *self._rest_tasks]
        for task in waits:
            task.cancel()
        if why:  # known already: say it before awaiting anything (a stop may cancel us again)
            self._closed_now(ws, epoch, why)
            await asyncio.gather(*waits, return_exceptions=True)
            return why
        results = await asyncio.gather(*waits, return_exceptions=True)
        reason = next((r for r in results if isinstance(r, str)), "")
        if not reason:
            err = next(
                (
                    r
                    for r in results
                    if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
                ),
                None,
            )
            reason = f"error:{type(err).__name__}" if err else "closed"
            if err is not None:
                log.error("feeder.ws.error", conn=self.cid, error=repr(err))
        self._closed_now(ws, epoch, reason)
        return reason

    def _closed_now(self, ws: ClientConnection, epoch: int, reason: str) -> None:
        _abort(ws)
        self._ws = None
        self._frames.clear()
        if self.recorder is not None:
            self.recorder.event(self.cid, "close", reason=reason, epoch=epoch)
        self.mirror.unsync(self.owned)
        self._do(self.subs.closed(reason))
        self.state = ConnectionState.RECONNECTING
        quiet = reason in ("shutdown", "recycled")
        (log.info if quiet else log.warning)(
            "feeder.ws.dropped", conn=self.cid, epoch=epoch, reason=reason, frames=self.stats.frames
        )

    async def _read(self, ws: ClientConnection, epoch: int) -> str:
        """Feed every frame through normalizer and mirror into the outbox."""
        loop = asyncio.get_running_loop()
        norm, mirror, outbox, stats = self.normalizer, self.mirror, self.outbox, self.stats
        subs, recorder = self.subs, self.recorder
        try:
            async for raw in ws:
                if stats.frames % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
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
                    events = out.events
                    if subs.waiting or subs.adopting:
                        events = self._books_seen(events)
                    events, bad = mirror.apply(events, loop.time())
                    stats.events += len(events)
                    await outbox.put(events, epoch, rx)
                    if bad:
                        self.request_resync(bad, "bbo_mismatch")
                for text, reason in out.quarantine:
                    outbox.quarantine(text, reason, rx)
                for market in out.markets:
                    if outbox.market(market, rx) and self.on_market is not None:
                        self.on_market(market)
        except ConnectionClosed as exc:
            return _closed(exc)
        return "closed"

    def _books_seen(self, events: list[Any]) -> list[Any]:
        """Books end their token's wait; an adopted token's events count from its book on."""
        subs, now, kept = self.subs, time.monotonic(), []
        for event in events:
            if isinstance(event, Book):
                self._do(subs.book_seen(event.asset_id, now))
            elif event.asset_id in subs.adopting:
                continue  # still published by the connection it is being adopted from
            kept.append(event)
        return kept

    async def _fetch_rest(self, tokens: list[str]) -> None:
        """Rung 2: snapshots over REST; one older than deltas already folded is dropped."""
        assert self.rest is not None
        try:
            bodies = await self.rest.fetch(tokens)
        except UpstreamError as exc:
            log.warning("feeder.rest.failed", conn=self.cid, tokens=len(tokens), error=str(exc))
            return
        rx, now = _now_us(), time.monotonic()
        wanted = [t for t in tokens if t in self.subs.owned or t in self.subs.adopting]
        for body in bodies:
            if self.recorder is not None:
                self.recorder.event(self.cid, "rest", frame=body.decode("utf-8", "replace"))
            books, bad = parse_books(body, wanted, rx)
            for text, reason in bad:
                self.outbox.quarantine(text, reason, rx)
            fresh: list[Event] = []
            for book in books:
                if self.mirror.older(book.asset_id, book.ts):
                    self.subs.counts["rest.stale"] += 1
                    continue
                self._do(self.subs.book_seen(book.asset_id, now, "rest"))
                fresh.append(book)
            events, _ = self.mirror.apply(fresh, now)
            await self.outbox.put(events, self.epoch, rx)
        log.info(
            "feeder.rest.books",
            conn=self.cid,
            asked=len(tokens),
            stale=self.subs.counts["rest.stale"],
        )

    async def _keep(self, ws: ClientConnection) -> str:
        """Heartbeat, deadlines and the ladder; return the reason when the socket must go."""
        cfg, loop = self.config, asyncio.get_running_loop()
        next_ping = loop.time() + cfg.ping_interval  # never before the subscription
        while True:
            now = loop.time()
            wake_at = min(
                next_ping, self.subs.next_deadline() or math.inf, self._recycle_at, now + 1.0
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wake_at - now, 0.001))
            self._wake.clear()
            now = loop.time()
            await self._flush(ws)
            if now >= next_ping:
                await self._send(ws, "PING")
                self._ping_sent, next_ping = now, now + cfg.ping_interval
            if now - self.last_pong > cfg.pong_timeout:
                return "pong_timeout"
            if now - self.last_data > cfg.silence_timeout:
                return "data_silence"
            if self.retiring and not self.subs.tokens:
                return "recycled"
            if now >= self._recycle_at:
                self._recycle()
            actions = self.subs.due(now)
            if actions.frames:
                self.stats.resubscribes += 1
                log.info(
                    "feeder.ladder.resubscribe",
                    conn=self.cid,
                    tokens=len(actions.subscribed),
                    sample=actions.subscribed[:3],
                )
            self._do(actions)
            await self._flush(ws)


def _closed(exc: ConnectionClosed) -> str:
    code = exc.rcvd.code if exc.rcvd is not None else 1006
    return f"closed:{code}"


def _now_us() -> int:
    return time.time_ns() // 1000


def _abort(ws: ClientConnection) -> None:
    """Drop the socket at once: a dead peer would make a closing handshake wait."""
    transport = getattr(ws, "transport", None)
    if transport is not None:
        transport.abort()

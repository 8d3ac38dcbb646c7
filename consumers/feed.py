"""`MarketFeed`: the seed's `MarketWebSocket` API, reading Redis instead of the exchange.

Usage is the seed's::

    feed = MarketFeed()                       # REDIS_URL and POLYBUS_PREFIX, else the
                                              # defaults (wire/settings.py); or
                                              # MarketFeed(url=…), the seed's keyword
    feed.on_price_change = my_handler         # plain function or coroutine
    await feed.connect()                      # True once Redis answers; fires on_connect
    await feed.subscribe(["7043…2544"])       # books load now; pending until published
    book = feed.get_order_book("7043…2544")   # bids/asks best first; .status says if trusted
    await feed.disconnect()

One background task keeps the books (reader.py: hash, then XREAD from its `last_id`, reload
on any gap) and fires the callbacks, one call per change, in stream order per token.

Liveness: the client *vouches* for its books after `connect()`. It stops — `on_disconnect` —
when Redis is lost, when nobody writes one of its tokens any more, or when a `status` entry
says the upstream connection of one of its tokens dropped (or was replaced); those books turn
`suspect`. "Nobody writes": with redundant feeders (`P:partitions` exists), the token's
partition has had no live lease for longer than `lease_ms` (POLYBUS_LEASE_MS, default 3000;
liveness.py `LeaseWatch`, one pipelined GET of the leases per health interval) — a failover,
the lease moving to a standby, is not that: it fires no `on_disconnect`, only `on_status`
with the new leader's `failover` entries; with older feeders (no `P:partitions`), a feeder's
health key expired. It vouches again — `on_connect` — once Redis answers, every token's
partition has a live lease (or a feeder is alive), and every subscribed token that ever had a
book is `synced` again. Redis is reconnected with capped,
jittered exponential backoff, forever (state RECONNECTING meanwhile), resuming from the
cursors held; anything lost meanwhile shows up as a `seq` gap and is reloaded. On a Redis
Cluster a primary's failover is not a lost Redis: only the books whose keys it serves turn
suspect (vouching stops, as for any suspect book) and are reloaded once its replica serves
them; the others are followed throughout (reader.py, keyed.py).

`connect()` is False with `on_error`, as the seed's, when Redis is unreachable (the error as
raised) or can never work (a `ConfigError` naming REDIS_URL: bad URL, password, DB, or an
ACL denying a feed's reads). Later refusals (NOPERM) are reported once, not taken for a lost
server: vouching stops, the feed retries with backoff. A Redis that stops answering is
noticed within `socket_timeout` (default: the health interval, at least 1 s and block + 0.5 s). A
refused lease or cursor write is reported once and reading goes on; bad data in Redis costs
only its token (reader.py, poison.py).

A callback that raises goes to `on_error` and the loop goes on. `on_status(payload)` fires per
token for every `status` entry and whenever the book's status changes: payload `asset_id`,
`status` (pending|synced|suspect, now), `previous`, `state` (the entry's, or '' for a change
made here), `reason`, `timestamp`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.exceptions import RedisError, ResponseError

from polybus.consumers.books import Callback, TokenBook
from polybus.consumers.cursor import CursorReport
from polybus.consumers.interest import DEFAULT_LEASE_S, Leases
from polybus.consumers.keyed import out_of_reach
from polybus.consumers.liveness import FeederChange, FeederWatch, LeaseChange, LeaseWatch
from polybus.consumers.models import ConnectionState, MarketData, OrderBook
from polybus.consumers.reader import Reader
from polybus.consumers.redisio import classify, explain, open_client, probe, safe_url
from polybus.redisio import REDIS_OR_OS_ERRORS, Client
from polybus.wire import keys
from polybus.wire.errors import BusError
from polybus.wire.settings import bus_target


__all__ = ["MarketFeed", "MarketWebSocket"]

log = structlog.get_logger("consumers.feed")

Handler = Callable[..., Any] | None

_REDIS_TICK = 0.1
"""Redis times blocked clients out on its `hz` timer (10 Hz by default), not to the ms."""

DEFAULT_LEASE_MS = 3000
"""POLYBUS_LEASE_MS, the feeders' partition lease time, when neither the parameter nor the
environment says."""

AUDIT_SLICE = 100
"""Tokens audited at once. With more followed, the audit runs in slices spread over its
interval (each token still audited once per interval): 2,000 at once took 80-140 ms of client
CPU on this 2-core machine (redis-py packs and parses each HGET in Python), a stall of every
callback behind it; a slice of 100 is a few ms."""

_EVENT_CALLBACKS = {
    "price_change": "on_price_change",
    "book_update": "on_book_update",
    "trade": "on_trade",
    "tick_size_change": "on_tick_size_change",
}


class MarketFeed:
    """Books and events of subscribed tokens, from Redis, with the seed's callback API."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        url: str | None = None,
        prefix: str | None = None,
        name: str | None = None,
        block_ms: int = 500,
        count: int = 2000,
        lease_s: float = DEFAULT_LEASE_S,
        health_interval: float = 1.0,
        audit_interval: float = 2.0,
        cursor_interval: float = 2.0,
        reconnect_max_delay: float = 5.0,
        socket_timeout: float | None = None,
        redis: Client | None = None,
        lease_ms: int | None = None,
    ) -> None:
        """`lease_s`: how long this client's interest in a token lasts (P:interest);
        `lease_ms`: the feeders' partition lease time (POLYBUS_LEASE_MS, default 3000): a
        token's partition without a live lease for longer than that fires on_disconnect."""
        # `url` is the seed's keyword (it named the WebSocket); here it is a Redis URL too.
        target = bus_target(os.environ, redis_url=redis_url or url, prefix=prefix)
        self.url = target.redis_url
        self.prefix = prefix = target.prefix
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.health_interval, self.audit_interval = health_interval, audit_interval
        self.reconnect_max_delay = reconnect_max_delay
        # A read that takes longer means Redis stopped answering: at least 1 s (and half a
        # second more than XREAD blocks) so that a loaded machine is not taken for a dead Redis.
        self.socket_timeout = socket_timeout or max(health_interval, block_ms / 1000 + 0.5, 1.0)
        self._redis, self._own_redis = redis, redis is None
        self._state = ConnectionState.DISCONNECTED
        self._books: dict[str, TokenBook] = {}
        self._report = CursorReport(self.name, prefix, cursor_interval)
        self._reader = Reader(self._books, prefix, self._report, count=count, block_ms=block_ms)
        self._leases = Leases(prefix, lease_s)
        self._watch = FeederWatch(prefix)
        self.lease_ms = lease_ms or _env_ms("POLYBUS_LEASE_MS", DEFAULT_LEASE_MS)
        self._writers = LeaseWatch(prefix, self.lease_ms)
        self._pending: list[Callback] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._vouching = False
        self._redis_ok = False
        self._refusal = ""
        """What Redis refused last (reported once until it works again); '' when all is well."""
        self._warned: set[str] = set()
        """Optional writes (lease, cursor) already reported as refused."""
        self._next_health = self._next_audit = 0.0
        self._audit_queue: list[str] = []
        """Tokens still to audit in this audit interval (in slices: _audit_slice)."""
        # the seed's callbacks, plus on_status
        self.on_price_change: Handler = None
        self.on_book_update: Handler = None
        self.on_trade: Handler = None
        self.on_tick_size_change: Handler = None
        self.on_error: Handler = None
        self.on_connect: Handler = None
        self.on_disconnect: Handler = None
        self.on_status: Handler = None

    # --- the seed's API -------------------------------------------------------------------
    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._state in (ConnectionState.CONNECTED, ConnectionState.SUBSCRIBED)

    @property
    def subscribed_tokens(self) -> list[str]:
        return list(self._books)

    @property
    def vouching(self) -> bool:
        """Whether the client currently vouches for its books (between on_connect and
        on_disconnect)."""
        return self._vouching

    @property
    def events(self) -> int:
        """Stream entries applied so far."""
        return self._reader.events

    @property
    def reloads(self) -> int:
        """Times a token's hash had to be reloaded after a gap."""
        return self._reader.reloads

    @property
    def max_lag_ms(self) -> float:
        """Largest delivery delay (now − feeder receive time) of any entry applied."""
        return self._report.max_lag_ms

    def get_market_data(self, token_id: str) -> MarketData | None:
        book = self._books.get(token_id)
        return book.market_data() if book else None

    def get_order_book(self, token_id: str) -> OrderBook | None:
        book = self._books.get(token_id)
        return book.order_book() if book else None

    async def connect(self) -> bool:
        """True once Redis answers and allows a feed's reads (state CONNECTED), feeder or
        not; fires on_connect. False (state FAILED) and on_error otherwise, like the seed."""
        if self.is_connected:
            return True
        self._state = ConnectionState.CONNECTING
        try:
            if self._redis is None:
                self._redis = await open_client(self.url, socket_timeout=self.socket_timeout)
            await probe(self._redis, self.prefix)
        except Exception as exc:  # the seed's rule: any failure is False and on_error
            self._state = ConnectionState.FAILED
            kind = classify(exc)
            log.warning(
                "consumers.feed.connect_failed", url=safe_url(self.url), kind=kind, error=str(exc)
            )
            await self._fire(self.on_error, exc if kind == "lost" else explain(exc, self.url))
            return False
        self._state, self._redis_ok, self._vouching = ConnectionState.CONNECTED, True, True
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"MarketFeed {self.name}")
        await self._fire(self.on_connect)
        return True

    async def subscribe(self, token_ids: list[str]) -> bool:
        """Follow these tokens: lease them and load their books now (pending until the
        feeder has published them). Raises InvalidToken for an id that is not a token."""
        if not self.is_connected or not token_ids:
            return False
        new = {keys.validate_token(t): TokenBook(t) for t in token_ids if t not in self._books}
        self._state = ConnectionState.SUBSCRIBED
        calls: list[Callback] = []
        try:
            await self._optional("lease", self._leases.lease(self._redis_client(), new))
            # Loaded before the loop sees them: XREAD must start at each hash's last_id.
            calls = await self._reader.load(self._redis_client(), list(new), into=new)
        except (RedisError, OSError):
            self._reader.reload.update(new)  # the loop loads them once Redis is back
        for token, book in new.items():
            self._books.setdefault(token, book)
        self._pending += calls
        return True

    async def unsubscribe(self, token_ids: list[str]) -> bool:
        """Stop following these tokens (their leases simply run out)."""
        for token in token_ids:
            self._books.pop(token, None)
            self._reader.forget(token)
        if not self._books and self._state is ConnectionState.SUBSCRIBED:
            self._state = ConnectionState.CONNECTED
        return True

    async def disconnect(self) -> None:
        """Stop reading, forget subscriptions, fire on_disconnect."""
        self._closing = True
        if self._task is not None:
            await _stop(self._task)
            self._task = None
        await self._reader.close()
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._report.remove(self._redis)
            if self._own_redis:
                await self._redis.aclose()
                self._redis = None
        for token in list(self._books):
            self._reader.forget(token)
        self._books.clear()
        self._pending.clear()
        self._state, self._vouching, self._redis_ok = ConnectionState.DISCONNECTED, False, False
        await self._fire(self.on_disconnect)

    # --- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            if _cancel_requested():  # asked to stop, and a library ate the CancelledError
                raise asyncio.CancelledError
            try:
                await self._round()
                attempt = 0
            except (RedisError, OSError) as exc:
                if self._closing or _cancel_requested():
                    raise asyncio.CancelledError from exc
                attempt += 1
                if classify(exc) == "lost":
                    await self._redis_lost(exc)
                else:
                    await self._refused(exc)
                await asyncio.sleep(self._backoff(attempt))
            except Exception as exc:  # our bug, or a reply we did not foresee: log, go on
                log.exception("consumers.feed.loop_failed")
                await self._fire(self.on_error, exc)
                for token in list(self._books):
                    await self._fire_calls(self._reader.gap(token, "loop_failed", quiet=True))
                attempt += 1
                await asyncio.sleep(self._backoff(attempt))

    async def _round(self) -> None:
        """Chores, reloads, one XREAD and its callbacks."""
        if not self._redis_ok:
            await self._redis_back()
        await self._chores()
        await self._fire_calls(await self._reader.load_pending(self._redis_client()))
        # Block no longer than until the next health check or audit is due, so each keeps its
        # clock: Redis ends a BLOCK only at its next tick, so ask for one tick less.
        due = min(self._next_health, self._next_audit) - time.monotonic() - _REDIS_TICK
        targets, reply, calls = await self._reader.fetch(self._redis_client(), int(due * 1000))
        await self._fire_calls(calls)
        await self._fire_pending()  # what subscribe() loaded goes before its entries
        for calls in self._reader.entries(targets, reply):
            rest = self._fire_now(calls)  # most entries: one plain function, called here
            if rest is not None:
                await rest
        if self._reader.unreached:  # part of a cluster is lost: those books are suspect
            await self._stop_vouching()
        if self._refusal:
            log.info("consumers.redis.allowed", was=self._refusal)
            self._refusal = ""
        await self._maybe_vouch()

    def _backoff(self, attempt: int) -> float:
        """Full jitter on min(0.1 s · 2^(n−1), max)."""
        return random.uniform(0.0, min(0.1 * 2 ** (attempt - 1), self.reconnect_max_delay))

    def _redis_client(self) -> Client:
        assert self._redis is not None, "MarketFeed is not connected"
        return self._redis

    async def _chores(self) -> None:
        """Feeder liveness, leases, the gap audit and the cursor report, each on its clock."""
        redis, now = self._redis_client(), time.monotonic()
        soon = now + _REDIS_TICK  # due within a tick: now, or the next BLOCK would overshoot
        if soon >= self._next_health:
            self._next_health = now + self.health_interval
            leases = await self._writers.check(redis, self._books, now)
            if self._writers.partitioned:  # leases decide; the health keys no longer do
                if self._watch.seen:
                    self._watch = FeederWatch(self.prefix)
                await self._lease_change(leases)
            else:
                await self._feeders(await self._watch.check(redis))
        if self._leases.due(now):
            await self._optional("lease", self._leases.renew(redis, list(self._books)))
        if soon >= self._next_audit:
            slices = max(1, -(-len(self._books) // AUDIT_SLICE))
            self._next_audit = now + self.audit_interval / slices
            await self._fire_calls(await self._reader.audit(redis, self._audit_slice()))
        if self._report.due():
            await self._optional(
                "cursor", self._report.publish(redis, self._books, self.events, self.reloads)
            )

    def _audit_slice(self) -> list[str]:
        """The next AUDIT_SLICE tokens to audit, in turn: each once per audit interval."""
        if not self._audit_queue:
            self._audit_queue = list(self._books)
        chunk = self._audit_queue[:AUDIT_SLICE]
        del self._audit_queue[:AUDIT_SLICE]
        return chunk

    async def _optional(self, what: str, write: Awaitable[None]) -> None:
        """A write the feed can do without (lease, cursor): a refusal is reported once (NOPERM
        under a read-only ACL, say) and the feed goes on; a lost connection is raised — but
        on a cluster a key's primary failing over is not a lost Redis: the write waits for
        its next turn (the reads find out whether the whole cluster is gone)."""
        try:
            await write
        except REDIS_OR_OS_ERRORS as exc:
            if out_of_reach(self._redis_client(), exc):
                log.info("consumers.feed.write_deferred", what=what, error=str(exc))
                return
            if not isinstance(exc, ResponseError) or classify(exc) == "lost":
                raise
            if what not in self._warned:
                self._warned.add(what)
                log.warning("consumers.feed.write_refused", what=what, error=str(exc))
                error = BusError(
                    f"MarketFeed {what} write refused by Redis (reading goes on): {exc}"
                )
                error.__cause__ = exc
                await self._fire(self.on_error, error)

    # --- liveness -------------------------------------------------------------------------
    async def _feeders(self, change: FeederChange) -> None:
        if change.lost:
            log.warning("consumers.feeder.lost", feeders=change.lost)
            for book in list(self._books.values()):  # suspect first: on_disconnect sees it
                await self._fire_calls(book.suspect("feeder", "feeder_lost"))
            await self._stop_vouching()
        if change.found:
            log.debug("consumers.feeder.found", feeders=change.found)
        if change.blip or change.restarted:
            log.info("consumers.feeder.back", blip=change.blip, restarted=change.restarted)
        if change.blip and not self._watch.lost:
            # Only a blip: the feeder never stopped, its stream never paused for long.
            for book in list(self._books.values()):
                await self._fire_calls(book.release("feeder_back"))

    async def _lease_change(self, change: LeaseChange) -> None:
        if change.lost:
            log.warning("consumers.writer.lost", partitions=change.lost, lease_ms=self.lease_ms)
            for token, book in list(self._books.items()):  # suspect first: on_disconnect sees it
                if self._writers.partition(token) in change.lost:
                    await self._fire_calls(book.suspect("feeder", "no_writer"))
            await self._stop_vouching()
        for p, (before, after) in change.moved.items():
            log.info(
                "consumers.writer.failover",
                partition=p,
                old=before.holder,
                new=after.holder,
                fence=after.fence,
            )
        for p, lease in change.back.items():
            log.info("consumers.writer.back", partition=p, holder=lease.holder, fence=lease.fence)
            for token, book in list(self._books.items()):
                # Its writer leads again: the stream never lost a writer's entries. Another
                # holder's `failover` and snapshot clear the doubt when they arrive.
                if self._writers.partition(token) == p and book.writer == lease.holder:
                    await self._fire_calls(book.release("writer_back"))

    async def _stop_vouching(self) -> None:
        if self._vouching:
            self._vouching = False
            await self._fire(self.on_disconnect)

    async def _maybe_vouch(self) -> None:
        # A token whose data in Redis is unusable (reader.bad) is suspect on its own: it
        # must not keep every other book from being vouched for.
        bad = self._reader.bad
        if self._vouching or not self._redis_ok or self._reader.reload - bad:
            return
        if self._writers.partitioned:
            if self._writers.unleased(self._books):
                return
        elif self._watch.seen and not self._watch.live:
            return
        # A token that never had a book (pending) cannot have become wrong: it does not block.
        if all(b.status != "suspect" for t, b in self._books.items() if t not in bad):
            self._vouching = True
            await self._fire(self.on_connect)

    async def _redis_lost(self, exc: BaseException) -> None:
        if not self._redis_ok:
            return
        log.warning("consumers.redis.lost", error=str(exc))
        self._redis_ok = False
        self._state = ConnectionState.RECONNECTING
        for token in list(self._books):  # suspect first: on_disconnect sees it
            await self._fire_calls(self._reader.gap(token, "redis_lost", quiet=True))
        await self._stop_vouching()

    async def _refused(self, exc: BaseException) -> None:
        """Redis answers but refuses what a feed must do (NOPERM, say): not a lost server.
        Reported to on_error once until it works again; books suspect meanwhile."""
        reason = f"{type(exc).__name__}: {exc}"
        if reason != self._refusal:
            self._refusal = reason
            log.error("consumers.redis.refused", error=str(exc))
            await self._fire(self.on_error, explain(exc, self.url))
        if self._redis_ok:
            self._redis_ok = False
            for token in list(self._books):
                await self._fire_calls(self._reader.gap(token, "redis_refused", quiet=True))
            await self._stop_vouching()

    async def _redis_back(self) -> None:
        """Redis answers again: reload every hash (the marks were set when it was lost)."""
        await self._redis_client().ping()
        self._redis_ok = True
        self._state = ConnectionState.SUBSCRIBED if self._books else ConnectionState.CONNECTED
        self._reader.reload.update(self._books)
        self._leases.renew_soon()
        if not self._refusal:
            log.info("consumers.redis.back", tokens=len(self._books))

    # --- callbacks ------------------------------------------------------------------------
    async def _fire_pending(self) -> None:
        pending, self._pending = self._pending, []
        await self._fire_calls(pending)

    def _fire_now(self, calls: list[Callback]) -> Awaitable[None] | None:
        """Fire these calls in order, without a coroutine per entry for what needs none: a
        data callback that is a plain function (or unset) is called here; from the first call
        that must be awaited (a coroutine's result, a status, an error, a raise) the rest go
        to _fire_calls, whose awaitable this returns (None when all are done)."""
        for i, (name, payload) in enumerate(calls):
            attr = _EVENT_CALLBACKS.get(name)
            if attr is None:
                return self._fire_calls(calls[i:])
            handler = getattr(self, attr)
            if handler is None:
                continue
            if handler is self.on_error:  # _fire tells that one's failures apart
                return self._fire_calls(calls[i:])
            try:
                result = handler(payload)
            except Exception as exc:  # a strategy's bug must not stop the feed
                return self._after(self._fire(self.on_error, exc), calls[i + 1 :])
            if result is not None and inspect.isawaitable(result):
                return self._after(_awaited(self, result), calls[i + 1 :])
        return None

    async def _after(self, first: Awaitable[None], calls: list[Callback]) -> None:
        await first
        await self._fire_calls(calls)

    async def _fire_calls(self, calls: list[Callback]) -> None:
        for name, payload in calls:
            if name == "status":
                # A wire state (not a local reload) that made the book suspect: upstream lost.
                if payload["status"] == "suspect" and payload["state"]:
                    await self._stop_vouching()
                await self._fire(self.on_status, payload)
            elif name == "error":
                await self._fire(self.on_error, payload["error"])
            else:
                await self._fire(getattr(self, _EVENT_CALLBACKS[name]), payload)

    async def _fire(self, handler: Handler, *args: Any) -> None:
        if handler is None:
            return
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # a strategy's bug must not stop the feed
            if handler is self.on_error:
                log.error("consumers.feed.on_error_failed", error=repr(exc))
            else:
                await self._fire(self.on_error, exc)


async def _awaited(feed: MarketFeed, result: Awaitable[Any]) -> None:
    """Await what a callback returned; what it raises goes to on_error (as in _fire)."""
    try:
        await result
    except Exception as exc:
        await feed._fire(feed.on_error, exc)


def _env_ms(name: str, default: int) -> int:
    """A positive integer of ms from the environment; anything else is `default`."""
    text = os.environ.get(name, "").strip()
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else default


def _cancel_requested() -> bool:
    """Whether this task was asked to stop (a library may have turned the CancelledError
    into a connection or timeout error, without taking the request back)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel the loop and wait for it; cancel again if a library swallowed the first one."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        log.error("consumers.feed.loop_died", error=repr(task.exception()))


MarketWebSocket = MarketFeed
"""The seed's name for the same thing."""

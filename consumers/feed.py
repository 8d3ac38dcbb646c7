"""`MarketFeed`: the seed's `MarketWebSocket` API, reading Redis instead of the exchange.

Each subscribed token is loaded from its book hash, then followed with one blocking XREAD
over every subscribed stream from the cursors it holds (gap-free: DESIGN.md §2). A `seq`
jump reloads the token's hash; a `status` entry or a lost Redis or feeder makes the client
stop vouching for its books (`on_disconnect`) until every book is synced again
(`on_connect`). Callbacks may be plain functions or coroutines; one that raises goes to
`on_error` and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from consumers.books import TokenBook
from consumers.models import ConnectionState, MarketData, OrderBook
from wire import keys
from wire.codec import decode
from wire.errors import DecodeError, SequenceGap


__all__ = ["MarketFeed", "MarketWebSocket"]

log = structlog.get_logger("consumers.feed")

Handler = Callable[..., Any] | None


class MarketFeed:
    """Books and events of subscribed tokens, from Redis, with the seed's callback API."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        name: str | None = None,
        block_ms: int = 500,
        count: int = 1000,
        lease_s: float = 60.0,
        health_interval: float = 1.0,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self.url = redis_url or os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
        self.prefix = prefix
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.block_ms, self.count = block_ms, count
        self.lease_s, self.health_interval = lease_s, health_interval
        self._redis = redis
        self._state = ConnectionState.DISCONNECTED
        self._books: dict[str, TokenBook] = {}
        self._reload: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._vouching = False
        self._feeder_seen = False
        self._feeder_live = True
        self._redis_ok = False
        self.events = 0
        self.reloads = 0
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

    def get_market_data(self, token_id: str) -> MarketData | None:
        book = self._books.get(token_id)
        return book.market_data() if book else None

    def get_order_book(self, token_id: str) -> OrderBook | None:
        book = self._books.get(token_id)
        return book.order_book() if book else None

    async def connect(self) -> bool:
        """True once Redis answers (state CONNECTED), feeder or not; fires on_connect."""
        if self.is_connected:
            return True
        self._state = ConnectionState.CONNECTING
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.url, decode_responses=True,
                                                  socket_connect_timeout=3)
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            self._state = ConnectionState.FAILED
            await self._fire(self.on_error, exc)
            return False
        self._state, self._redis_ok, self._vouching = ConnectionState.CONNECTED, True, True
        self._task = asyncio.create_task(self._run())
        await self._fire(self.on_connect)
        return True

    async def subscribe(self, token_ids: list[str]) -> bool:
        """Follow these tokens; their books load now (pending until the feeder has them)."""
        if not self.is_connected or not token_ids:
            return False
        new = [keys.validate_token(t) for t in dict.fromkeys(token_ids) if t not in self._books]
        for token in new:
            self._books[token] = TokenBook(token)
        self._reload.update(new)
        await self._lease(new)
        self._state = ConnectionState.SUBSCRIBED
        return True

    async def unsubscribe(self, token_ids: list[str]) -> bool:
        """Stop following these tokens (their leases simply expire)."""
        for token in token_ids:
            self._books.pop(token, None)
            self._reload.discard(token)
        return True

    async def disconnect(self) -> None:
        """Stop reading, forget subscriptions, fire on_disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(keys.consumer(self.name, self.prefix))
            await self._redis.aclose()
            self._redis = None
        self._books.clear()
        self._state = ConnectionState.DISCONNECTED
        await self._fire(self.on_disconnect)

    # --- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt, next_chores = 0, 0.0
        while True:
            try:
                if not self._redis_ok:
                    await self._redis_back()
                if time.monotonic() >= next_chores:
                    await self._chores()
                    next_chores = time.monotonic() + self.health_interval
                await self._reload_pending()
                await self._read_once()
                attempt = 0
            except (RedisError, OSError) as exc:
                attempt += 1
                await self._redis_lost(exc)
                await asyncio.sleep(random.uniform(0, min(0.1 * 2 ** attempt, 5.0)))

    async def _read_once(self) -> None:
        assert self._redis is not None
        if not self._books:
            await asyncio.sleep(self.block_ms / 1000)
            return
        streams = {keys.stream(t, self.prefix): b.cursor for t, b in self._books.items()
                   if t not in self._reload}
        if not streams:
            return
        reply: Any = await self._redis.xread(streams, count=self.count,  # type: ignore[arg-type]
                                             block=self.block_ms)
        for key, entries in reply or []:
            token = keys.token_of(key)
            for entry_id, fields in entries:
                if token not in self._books or token in self._reload:
                    break
                await self._apply(token, entry_id, fields)

    async def _apply(self, token: str, entry_id: str, fields: dict[str, str]) -> None:
        book = self._books[token]
        try:
            entry = decode(fields, token, entry_id)
            calls = book.apply(entry)
        except (SequenceGap, DecodeError) as exc:
            book.status = "suspect"  # never served as good while we reload
            self._reload.add(token)
            self.reloads += 1
            log.info("consumers.reload", token=token[:12], reason=str(exc))
            return
        self.events += 1
        for name, payload in calls:
            if name == "status":
                await self._fire(self.on_status, payload)
                if payload["state"] in ("disconnected", "suspect"):
                    await self._stop_vouching()
            else:
                await self._fire(getattr(self, f"on_{name}"), payload)
                if name == "book_update":
                    await self._maybe_vouch()

    async def _reload_pending(self) -> None:
        """Reload the hashes of tokens that need it: one pipeline for all of them."""
        if not self._reload or self._redis is None:
            return
        tokens = list(self._reload)
        pipe = self._redis.pipeline(transaction=False)
        for token in tokens:
            pipe.hgetall(keys.book(token, self.prefix))
        for token, fields in zip(tokens, await pipe.execute(), strict=True):
            self._reload.discard(token)
            book = self._books.get(token)
            if book is None:
                continue
            book.load(fields)
            if book.status == "synced":
                await self._fire(self.on_book_update, book.book_payload())
        await self._maybe_vouch()

    # --- liveness -------------------------------------------------------------------------
    async def _chores(self) -> None:
        """Feeder liveness, interest leases and our cursor, once per health interval."""
        assert self._redis is not None
        found = [k async for k in self._redis.scan_iter(keys.feeder_pattern(self.prefix),
                                                        count=100)]
        live = bool(found)
        self._feeder_seen |= live
        if self._feeder_seen and not live and self._feeder_live:
            self._feeder_live = False
            await self._stop_vouching()
        elif live and not self._feeder_live:
            self._feeder_live = True
            await self._maybe_vouch()
        await self._lease(list(self._books))
        await self._publish_cursor()

    async def _stop_vouching(self) -> None:
        if self._vouching:
            self._vouching = False
            await self._fire(self.on_disconnect)

    async def _maybe_vouch(self) -> None:
        if self._vouching or not (self._redis_ok and self._feeder_live) or self._reload:
            return
        if all(b.status == "synced" for b in self._books.values()):
            self._vouching = True
            await self._fire(self.on_connect)

    async def _redis_lost(self, exc: BaseException) -> None:
        if self._redis_ok:
            log.warning("consumers.redis.lost", error=str(exc))
            self._redis_ok = False
            self._state = ConnectionState.RECONNECTING
            for book in self._books.values():
                book.status = "suspect"
            await self._stop_vouching()

    async def _redis_back(self) -> None:
        """Redis answers again: resume from held cursors; `seq` checks catch any loss."""
        assert self._redis is not None
        await self._redis.ping()
        self._redis_ok = True
        self._state = ConnectionState.SUBSCRIBED if self._books else ConnectionState.CONNECTED
        self._reload.update(self._books)  # statuses were set suspect locally: read them again
        log.info("consumers.redis.back")

    async def _lease(self, tokens: Iterable[str]) -> None:
        """Ask the feeder to carry these tokens (it ignores leases on tokens it already has)."""
        tokens = list(tokens)
        if tokens and self._redis is not None:
            expiry = (time.time() + self.lease_s) * 1000
            await self._redis.zadd(keys.interest(self.prefix), dict.fromkeys(tokens, expiry))

    async def _publish_cursor(self) -> None:
        assert self._redis is not None
        newest = max((b.rx for b in self._books.values()), default=0)
        lag = max(0.0, time.time() * 1000 - newest / 1000) if newest else 0.0
        key = keys.consumer(self.name, self.prefix)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"tokens": len(self._books), "events": self.events,
                                "reloads": self.reloads, "lag_ms": int(lag),
                                "updated_ms": int(time.time() * 1000)})
        pipe.pexpire(key, int(max(10.0, 10 * self.health_interval) * 1000))
        await pipe.execute()

    async def _fire(self, handler: Handler, *args: Any) -> None:
        if handler is None:
            return
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # a strategy's bug must not stop the feed
            if handler is self.on_error:
                log.error("consumers.on_error_failed", error=repr(exc))
            else:
                await self._fire(self.on_error, exc)


MarketWebSocket = MarketFeed
"""The seed's name for the same thing."""

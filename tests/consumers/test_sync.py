"""MarketFeed against the feeder's real Lua step on a private redis-server, driven by hand:
exact hash-then-XREAD sync, pending books, gaps, Redis restarts, feeder liveness, leases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from polybus.consumers import ConnectionState, MarketFeed
from polybus.wire import keys
from polybus.wire.canon import canon
from tests.consumers.bus import T1, T2, Bus
from tests.support import RedisServer, free_port, wait_for


FAST: dict[str, Any] = dict(
    block_ms=100, health_interval=0.1, audit_interval=0.1, cursor_interval=0.1
)


class Recorder:
    """Every callback a feed fires, in order."""

    def __init__(self, feed: MarketFeed) -> None:
        self.calls: list[tuple[str, Any]] = []
        for name in ("price_change", "book_update", "trade", "tick_size_change", "status", "error"):
            setattr(feed, f"on_{name}", lambda d, n=name: self.calls.append((n, d)))
        feed.on_connect = lambda: self.calls.append(("connect", None))
        feed.on_disconnect = lambda: self.calls.append(("disconnect", None))

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    def of(self, name: str) -> list[Any]:
        return [d for n, d in self.calls if n == name]


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[Bus]:
    redis = redis_server.client()
    yield Bus(redis)
    await redis.aclose()


async def feed_on(url: str, tokens: list[str], **options: Any) -> tuple[MarketFeed, Recorder]:
    feed = MarketFeed(url, **{**FAST, **options})
    rec = Recorder(feed)
    assert await feed.connect()
    assert await feed.subscribe(tokens)
    return feed, rec


def levels(feed: MarketFeed, token: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    book = feed.get_order_book(token)
    assert book is not None
    return (
        [(lv.price_str, lv.size_str) for lv in book.bids],
        [(lv.price_str, lv.size_str) for lv in book.asks],
    )


async def hash_levels(bus: Bus, token: str) -> tuple[list[tuple[str, str]], ...]:
    from tests.e2e.harness import levels_of

    return levels_of(await bus.redis.hgetall(keys.book(token)))


async def test_hash_then_xread_sees_every_later_event_exactly_once(redis_server, bus) -> None:
    """Joining after 30 entries: one book_update from the hash, then exactly the later 20."""
    await bus.book(T1)
    for i in range(29):
        await bus.change(T1, canon(f"0.{10 + i}"), str(i + 1))
    feed, rec = await feed_on(redis_server.url, [T1])
    assert feed.get_order_book(T1).status == "synced", "loaded by subscribe() itself"
    for i in range(20):
        await bus.change(T1, "0.47", str(100 + i))
    await wait_for(lambda: len(rec.of("price_change")) >= 20, 5, "20 price changes")
    assert [d["size"] for d in rec.of("price_change")] == [str(100 + i) for i in range(20)]
    assert rec.names().count("book_update") == 1 and rec.names()[0] == "connect"
    assert tuple(levels(feed, T1)) == await hash_levels(bus, T1)
    assert feed.reloads == 0 and feed.events == 20
    await feed.disconnect()


async def test_a_token_not_yet_published_is_pending_until_its_book(redis_server, bus) -> None:
    """Subscribing before any feeder: connect and subscribe succeed, the book is pending."""
    feed, rec = await feed_on(redis_server.url, [T1, T2])
    assert feed.state is ConnectionState.SUBSCRIBED and feed.vouching
    assert feed.get_order_book(T1).status == "pending"
    assert feed.get_market_data(T1).is_stale
    await bus.status(T1, "connected")
    await bus.book(T1)
    await wait_for(lambda: feed.get_order_book(T1).status == "synced", 5, "T1 synced")
    assert rec.of("book_update")[0]["bids"][0] == {"price": "0.48", "size": "100"}
    assert "disconnect" not in rec.names()
    await feed.disconnect()
    assert feed.state is ConnectionState.DISCONNECTED and feed.subscribed_tokens == []
    assert rec.names()[-1] == "disconnect"


async def test_a_stream_trimmed_to_nothing_past_a_stuck_consumer_is_reloaded(
    redis_server, bus
) -> None:
    """Entries trimmed away with nothing after them: the audit sees it and reloads the hash."""
    await bus.book(T1)
    feed, rec = await feed_on(redis_server.url, [T1])
    release = asyncio.Event()

    async def stuck(_: dict[str, Any]) -> None:
        await release.wait()

    feed.on_price_change = stuck
    await bus.change(T1, "0.45", "1")  # the consumer gets stuck on this one
    await wait_for(lambda: feed.events == 1, 5, "the consumer to take the first change")
    for i in range(10):
        await bus.change(T1, "0.44", str(i + 2))
    await bus.redis.xtrim(keys.stream(T1), maxlen=0)
    release.set()
    await wait_for(lambda: feed.reloads == 1, 5, "a reload")
    await wait_for(lambda: feed.get_order_book(T1).status == "synced", 5, "synced again")
    assert tuple(levels(feed, T1)) == await hash_levels(bus, T1)
    assert ("0.44", "11") in levels(feed, T1)[0]
    assert "disconnect" not in rec.names(), "a local gap is repaired, not an outage"
    await feed.disconnect()


async def test_redis_restart_disconnects_then_resumes_on_fresh_books(redis_server, bus) -> None:
    """Redis restarts empty: on_disconnect, RECONNECTING, suspect; the republished book then
    replaces the old one wholesale, and on_connect fires."""
    await bus.book(T1, bid="0.30")
    feed, rec = await feed_on(redis_server.url, [T1])
    at_disconnect: list[tuple[ConnectionState, str]] = []
    feed.on_disconnect = lambda: at_disconnect.append((feed.state, feed.get_order_book(T1).status))
    redis_server.restart()
    await wait_for(lambda: bool(at_disconnect), 5, "on_disconnect")
    assert at_disconnect[0] == (ConnectionState.RECONNECTING, "suspect")
    await wait_for(lambda: feed.state is ConnectionState.SUBSCRIBED, 10, "reconnected")
    assert feed.get_order_book(T1).status == "suspect", "no hash yet: still not trusted"
    fresh = Bus(redis_server.client())
    await fresh.book(T1, bid="0.41")
    await wait_for(lambda: feed.get_order_book(T1).status == "synced", 5, "synced again")
    assert levels(feed, T1)[0] == [("0.41", "100"), ("0.4", "5")]
    assert rec.names()[-1] == "connect"
    await feed.disconnect()
    await fresh.redis.aclose()


async def test_a_feeder_whose_health_key_expires_is_lost_until_it_republishes(
    redis_server, bus
) -> None:
    """Health key gone: on_disconnect and suspect; a restarted feeder's book: on_connect."""
    await bus.health("run1", ttl_ms=60_000)
    await bus.book(T1)
    feed, rec = await feed_on(redis_server.url, [T1])
    await wait_for(lambda: bool(feed._watch.live), 5, "the feeder seen")
    await bus.redis.delete(keys.feeder("f1"))  # as if its TTL ran out
    await wait_for(lambda: "disconnect" in rec.names(), 5, "on_disconnect")
    assert feed.get_order_book(T1).status == "suspect"
    await bus.health("run2", ttl_ms=60_000)  # a new run of the feeder
    await bus.status(T1, "connected", "epoch 1")
    await wait_for(lambda: bool(feed._watch.live), 5, "the feeder back")
    assert feed.get_order_book(T1).status == "suspect", "no book from the new run yet"
    assert rec.names()[-1] != "connect"
    await bus.book(T1, bid="0.47")
    await wait_for(lambda: rec.names()[-1] == "connect", 5, "on_connect")
    assert feed.get_order_book(T1).status == "synced"
    await feed.disconnect()


async def test_a_health_key_blip_of_the_same_run_is_forgiven(redis_server, bus) -> None:
    """The same feeder run back after a blip: books trusted again without new entries."""
    await bus.health("run1", ttl_ms=60_000)
    await bus.book(T1)
    feed, rec = await feed_on(redis_server.url, [T1])
    await wait_for(lambda: bool(feed._watch.live), 5, "the feeder seen")
    await bus.redis.delete(keys.feeder("f1"))
    await wait_for(lambda: "disconnect" in rec.names(), 5, "on_disconnect")
    await bus.health("run1", ttl_ms=60_000)
    await wait_for(lambda: rec.names()[-1] == "connect", 5, "on_connect")
    assert feed.get_order_book(T1).status == "synced"
    await feed.disconnect()


async def test_connect_to_no_redis_fails_into_failed_with_on_error() -> None:
    """No Redis: connect() returns False, state FAILED, on_error gets the exception."""
    feed = MarketFeed(f"redis://127.0.0.1:{free_port()}/0")
    errors: list[Exception] = []
    feed.on_error = errors.append
    assert await feed.connect() is False
    assert feed.state is ConnectionState.FAILED and not feed.is_connected
    assert len(errors) == 1
    assert await feed.subscribe([T1]) is False


async def test_leases_extend_never_shorten_and_cursors_are_published(redis_server, bus) -> None:
    """subscribe() leases each token (never shortening a longer lease); the cursor hash
    carries per-token ids and seqs, and goes away on disconnect."""
    far = int((time.time() + 3600) * 1000)
    await bus.redis.zadd(keys.interest(), {T2: far})
    await bus.book(T1)
    feed, _ = await feed_on(redis_server.url, [T1, T2], lease_s=30.0, name="c1")
    expiry = await bus.redis.zscore(keys.interest(), T1)
    assert abs(expiry - (time.time() + 30) * 1000) < 5000
    assert await bus.redis.zscore(keys.interest(), T2) == far
    cursor_key = keys.consumer("c1")

    async def published() -> bool:
        return (await bus.redis.hget(cursor_key, f"seq:{T1}")) == "1"

    await wait_for(published, 5, "the cursor hash")
    cursor = await bus.redis.hgetall(cursor_key)
    assert cursor[f"id:{T1}"] == await bus.redis.hget(keys.book(T1), "last_id")
    assert cursor["tokens"] == "2" and int(await bus.redis.pttl(cursor_key)) > 0
    await feed.unsubscribe([T2])
    assert await bus.redis.zscore(keys.interest(), T2) == far, "leases just run out"
    await feed.disconnect()
    assert not await bus.redis.exists(cursor_key)


async def test_coroutine_callbacks_and_unsubscribe(redis_server, bus) -> None:
    """Coroutine callbacks are awaited; an unsubscribed token's events stop arriving."""
    await bus.book(T1)
    await bus.book(T2)
    feed, _ = await feed_on(redis_server.url, [T1, T2])
    seen: list[str] = []

    async def on_trade(data: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        seen.append(data["asset_id"])

    feed.on_trade = on_trade
    await bus.trade(T1)
    await bus.trade(T2)
    await wait_for(lambda: sorted(seen) == [T1, T2], 5, "both trades")
    await feed.unsubscribe([T2])
    await bus.trade(T2)
    await bus.trade(T1)
    await wait_for(lambda: len(seen) == 3, 5, "the T1 trade")
    assert seen[-1] == T1 and feed.subscribed_tokens == [T1]
    await feed.disconnect()

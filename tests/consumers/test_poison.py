"""Poisoned data in Redis (garbage written with redis-py directly) costs only its own token,
once: MarketFeed keeps every other token flowing, calls on_error once, never loops on it."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from polybus.consumers import MarketFeed
from polybus.wire import keys
from polybus.wire.errors import BusError, DecodeError
from tests.consumers.bus import T1, T2, Bus
from tests.support import RedisServer, wait_for


FAST: dict[str, Any] = dict(
    block_ms=100, health_interval=0.2, audit_interval=0.2, cursor_interval=0.2
)

VALIDATOR = importlib.util.find_spec("wire.validate") is not None
"""wire/validate.py (another branch) makes wire.codec.decode refuse prices outside (0, 1)."""


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[Bus]:
    redis = redis_server.client()
    yield Bus(redis)
    await redis.aclose()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client that writes bytes as given (non-UTF-8 included)."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


class Watch:
    """What a feed reports: errors, and every status change per token."""

    def __init__(self, feed: MarketFeed) -> None:
        self.errors: list[Exception] = []
        self.status: dict[str, list[str]] = {T1: [], T2: []}
        self.changes: dict[str, list[str]] = {T1: [], T2: []}
        self.disconnects = 0
        feed.on_error = self.errors.append
        feed.on_status = lambda d: self.status[d["asset_id"]].append(d["status"])
        feed.on_price_change = lambda d: self.changes[d["asset_id"]].append(d["size"])

        def gone() -> None:
            self.disconnects += 1

        feed.on_disconnect = gone


async def started(url: str) -> tuple[MarketFeed, Watch]:
    feed = MarketFeed(url, **FAST)
    watch = Watch(feed)
    assert await feed.connect()
    assert await feed.subscribe([T1, T2])
    await wait_for(lambda: watch.status[T2] == ["synced"], 5, "T2's load announced")
    watch.status = {T1: [], T2: []}  # from here on, T2 must never change status
    return feed, watch


async def t2_keeps_flowing(bus: Bus, watch: Watch, n: int = 15) -> None:
    """T2's changes arrive one by one while T1 is poisoned (time passes with the feed busy)."""
    for i in range(n):
        size = str(1000 + i)
        await bus.change(T2, "0.47", size)
        await wait_for(lambda s=size: s in watch.changes[T2], 5, f"T2 change {size}")


async def hash_seq(bus: Bus, token: str) -> int:
    return int(await bus.redis.hget(keys.book(token), "seq"))


async def hgetalls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


POISON_ENTRIES: list[Any] = [
    pytest.param(
        {b"type": b"price_change", b"side": b"bid", b"price": b"abc", b"size": b"1"},
        id="non-number-price",
    ),
    pytest.param(
        {
            b"type": b"price_change",
            b"side": b"bid",
            b"price": b"0.46",
            b"size": b"1",
            b"hash": b"h\xff\xfe",
        },
        id="non-utf8-byte",
    ),
    pytest.param({b"type": b"book", b"bids": b"[[", b"asks": b"[]"}, id="levels-not-json"),
    pytest.param(
        {b"type": b"trade", b"price": b"1e99999999", b"size": b"1"}, id="huge-exponent-trade"
    ),
    pytest.param({b"type": b"status", b"state": b"weird"}, id="status-weird"),
    pytest.param({b"type": b"no_such_type"}, id="unknown-type"),
    pytest.param(
        {b"type": b"price_change", b"side": b"bid", b"price": b"7", b"size": b"-5"},
        id="price-7-size-minus-5",
        marks=pytest.mark.skipif(not VALIDATOR, reason="needs wire/validate.py"),
    ),
]


@pytest.mark.parametrize("poison", POISON_ENTRIES)
async def test_a_poisoned_entry_costs_only_its_token_once(
    redis_server, bus, raw, poison: dict[bytes, bytes]
) -> None:
    """An entry that cannot be used (XADDed by hand after the hash's last_id): on_error once,
    T1 reloaded and then stepping over it, T2 never touched, no reload loop."""
    await bus.book(T1)
    await bus.book(T2)
    feed, watch = await started(redis_server.url)
    seq = await hash_seq(bus, T1)
    await raw.xadd(
        keys.stream(T1), {**poison, b"seq": str(seq + 1).encode(), b"epoch": b"1", b"rx": b"1"}
    )
    await wait_for(lambda: len(watch.errors) == 1, 5, "on_error for the poisoned entry")
    await t2_keeps_flowing(bus, watch)
    await wait_for(lambda: watch.status[T1][-1:] == ["synced"], 5, "T1 reloaded")
    await bus.change(T1, "0.45", "77")  # the feeder's next entry: seq + 1 again (Lua's count)
    await wait_for(lambda: "77" in watch.changes[T1], 5, "T1 flowing past the poison")
    await t2_keeps_flowing(bus, watch)
    assert len(watch.errors) == 1, [str(e) for e in watch.errors]
    assert isinstance(watch.errors[0], DecodeError) and T1 in str(watch.errors[0])
    assert feed.get_order_book(T1).status == "synced"
    assert watch.status[T2] == [], "T2 was never suspect"
    assert feed.reloads == 1, "one reload, then the poisoned entry is stepped over"
    assert watch.disconnects == 0 and feed.vouching
    await feed.disconnect()


CORRUPT_HASHES: list[Any] = [
    pytest.param({"seq": "abc"}, id="seq-abc"),
    pytest.param({"bid:0.48": "garbage"}, id="level-size-garbage"),
    pytest.param({"bid:zz": "10"}, id="level-price-garbage"),
    pytest.param({"status": "weird"}, id="status-weird"),
    pytest.param({"last_id": "not-an-id"}, id="bad-last-id"),
    pytest.param({"last_trade_price": "1e99999999"}, id="last-trade-garbage"),
    pytest.param({b"bid:0.3\xff": "1"}, id="non-utf8-field-name"),
    pytest.param(
        {"bid:7": "-5"},
        id="price-7-size-minus-5",
        marks=pytest.mark.skipif(not VALIDATOR, reason="needs wire/validate.py"),
    ),
    pytest.param(None, id="wrong-key-type"),
]


@pytest.mark.parametrize("corruption", CORRUPT_HASHES)
async def test_a_corrupt_hash_keeps_its_token_suspect_quietly(
    redis_server, bus, raw, corruption: dict[Any, str] | None
) -> None:
    """subscribe() does not raise on a corrupt hash; T1 is suspect, reported once and retried
    with backoff (a handful of HGETALLs, not a loop) while T2 flows; a fresh book heals it."""
    await bus.book(T1)
    await bus.book(T2)
    if corruption is None:
        await raw.delete(keys.book(T1))
        await raw.set(keys.book(T1), "not a hash")
    else:
        await raw.hset(keys.book(T1), mapping=corruption)  # type: ignore[arg-type]
    feed, watch = await started(redis_server.url)
    assert feed.get_order_book(T1).status == "suspect"
    assert feed.get_order_book(T2).status == "synced"
    before = await hgetalls(bus.redis)
    await t2_keeps_flowing(bus, watch, n=30)
    assert len(watch.errors) == 1, [str(e) for e in watch.errors]
    assert isinstance(watch.errors[0], BusError) and T1 in str(watch.errors[0])
    assert feed.get_order_book(T1).status == "suspect"
    assert await hgetalls(bus.redis) - before < 15, "retried with backoff, not in a loop"
    assert watch.status[T2] == [] and watch.disconnects == 0 and feed.vouching
    await raw.delete(keys.book(T1))  # an operator (or a fresh snapshot) repairs the token
    await bus.book(T1, bid="0.44")
    await wait_for(lambda: feed.get_order_book(T1).status == "synced", 15, "T1 healed")
    assert feed.get_order_book(T1).bids[0].price_str == "0.44"
    assert len(watch.errors) == 1
    await feed.disconnect()


async def test_a_stream_key_of_the_wrong_type_costs_only_its_token(redis_server, bus, raw) -> None:
    """A string where T1's stream should be makes XREAD refuse every key: the feed finds the
    culprit, puts T1 aside (reported once) and keeps T2 flowing."""
    await bus.book(T2)
    await raw.set(keys.stream(T1), "not a stream")
    feed, watch = await started(redis_server.url)
    await t2_keeps_flowing(bus, watch, n=20)
    assert len(watch.errors) == 1 and T1 in str(watch.errors[0])
    assert watch.status[T2] == [] and watch.disconnects == 0
    await feed.disconnect()


async def test_hostile_feeder_keys_are_ignored(redis_server, bus, raw) -> None:
    """A key under the feeders' pattern that is not a health hash (a string, a non-UTF-8
    `started`) is no feeder and never an error for the loop."""
    await bus.book(T1)
    await bus.book(T2)
    await raw.set(keys.feeder("evil"), "x")
    await raw.hset(keys.feeder("odd"), mapping={"started": b"\xff"})
    feed, watch = await started(redis_server.url)
    await t2_keeps_flowing(bus, watch, n=10)
    assert watch.errors == [] and watch.disconnects == 0
    assert keys.feeder("odd") in feed._watch.live
    await feed.disconnect()


def test_poison_reports_once_backs_off_to_a_cap_and_rearms_after_a_clean_load() -> None:
    """Pure Poison: a bad token is reported the first time only, its retries wait longer
    each time up to the cap, and a clean load restarts both."""
    import random

    from polybus.consumers.poison import Poison

    poison = Poison(base=0.2, cap=1.0, rng=random.Random(1))
    now, waits, reports = 0.0, [], []
    for _ in range(6):
        reports.append(poison.bad(T1, now))
        assert not poison.due(T1, now)
        start = now
        while not poison.due(T1, now):
            now += 0.01
        waits.append(now - start)
    assert reports == [True] + [False] * 5
    assert waits[0] <= 0.21 and waits[-1] >= 0.5 and max(waits) <= 1.01
    assert poison.due(T2, now), "other tokens are never held back"
    poison.good(T1)
    assert poison.bad(T1, now) is True and poison.due(T1, now + 0.21)
    poison.entry(T1, "5-0", now)
    assert poison.known(T1, "5-0") and not poison.known(T2, "5-0")

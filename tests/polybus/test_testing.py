"""The `polybus_replay` pytest fixture, used the way a strategy's own tests would."""

from __future__ import annotations

import redis.asyncio as aioredis

from polybus.wire import keys
from polybus.wire.codec import decode
from polybus.wire.events import Book
from tests.replay.golden import expected, recording


pytest_plugins = ["polybus.testing"]


async def test_fixture_gives_a_redis_holding_the_replayed_session(polybus_replay) -> None:
    """The returned URL's Redis holds the session's final books and gap-free streams."""
    from polybus.replay.sessions import read_lines

    url = await polybus_replay(recording("faults"), prefix="pm")
    final = {x["token"]: x for x in read_lines(expected("faults")) if x["kind"] == "hash"}
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        for token, want in final.items():
            book = await redis.hgetall(keys.book(token))
            assert book["best_bid"] == want["best_bid"] and book["seq"] == want["seq"]
            entries = [decode(f, token, i) for i, f in await redis.xrange(keys.stream(token))]
            assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
            assert entries[-1].id == book["last_id"]
            assert any(isinstance(e.event, Book) for e in entries)
    finally:
        await redis.aclose()


async def test_fixture_replays_a_window_under_another_prefix(polybus_replay) -> None:
    """Two calls share one server; `end` cuts the session, so the books differ from the full one."""
    from polybus.replay.sessions import read_lines

    times = [x["t"] for x in read_lines(recording("calm"))]
    url = await polybus_replay(recording("calm"), prefix="full")
    again = await polybus_replay(recording("calm"), prefix="early", end=times[len(times) // 2])
    assert url == again
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        tokens = [keys.token_of(k) async for k in redis.scan_iter(match="full:book:*")]
        full = [await redis.xlen(keys.stream(t, "full")) for t in tokens]
        early = [await redis.xlen(keys.stream(t, "early")) for t in tokens]
        assert sum(early) < sum(full) and all(early)
    finally:
        await redis.aclose()


async def test_market_feed_runs_against_the_fixture(polybus_replay) -> None:
    """The README's use: MarketFeed over a replayed session serves its final books and status
    (the recording ends with the feeder's shutdown, so they honestly say suspect)."""
    from polybus.consumers import MarketFeed
    from polybus.replay.sessions import read_lines
    from tests.support import wait_for

    url = await polybus_replay(recording("calm"), prefix="pm")
    final = {x["token"]: x for x in read_lines(expected("calm")) if x["kind"] == "hash"}
    feed = MarketFeed(url, prefix="pm")
    assert await feed.connect()
    await feed.subscribe(list(final))
    try:
        await wait_for(
            lambda: all(feed.get_order_book(t).status == final[t]["status"] for t in final),
            10,
            "books loaded from the replayed session",
        )
        for token, want in final.items():
            book = feed.get_order_book(token)
            assert book is not None and book.bids[0].price_str == want["best_bid"]
            assert book.status == "suspect"
    finally:
        await feed.disconnect()

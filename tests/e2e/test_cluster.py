"""Simulator → feeder → a real Redis Cluster (3 primaries, 3 replicas): the same contract,
through a primary's failover."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio.cluster import RedisCluster

from polybus import MarketFeed
from polybus.redisio import connect
from polybus.wire import keys
from tests.consumers.helpers import feed_books_equal_truth
from tests.e2e.harness import assert_books_equal_truth, rig
from tests.support import LocalCluster, wait_for


async def synced(r) -> bool:
    """Every token's hash says synced."""
    for token in r.tokens:
        if await r.redis.hget(keys.book(token), "status") != "synced":
            return False
    return True


async def flowed(r, events: int, timeout: float = 10.0) -> None:
    """Let the simulator's flow run until the feeder has published `events` more events."""
    r.sim.resume()
    target = r.feeder.published + events
    await wait_for(lambda: r.feeder.published >= target, timeout, f"{events} more events")


def primary_of(cluster: LocalCluster, tokens: list[str]) -> dict[int, list[str]]:
    """Node port -> the tokens whose book slot it serves."""
    by_node: dict[int, list[str]] = {}
    for token in tokens:
        by_node.setdefault(cluster.node_for(keys.book(token)).port, []).append(token)
    return by_node


async def test_books_equal_truth_on_a_cluster(redis_cluster: LocalCluster) -> None:
    """Given one node's URL, the feeder finds the cluster and every book, on every primary,
    equals the simulator's truth; its health hash is written there too, and at stop its
    partition leases (keys on every primary) are released and its health key deleted."""
    async with rig(redis_cluster, markets=8) as r:
        assert len(primary_of(redis_cluster, r.tokens)) == 3  # tokens on every primary
        await wait_for(lambda: synced(r), 10, "all books synced")
        assert isinstance(r.feeder.redis, RedisCluster)
        await flowed(r, 300)
        await assert_books_equal_truth(r)
        token = r.tokens[0]
        entries = await r.redis.xrange(keys.stream(token))
        assert [int(f["seq"]) for _, f in entries] == list(range(1, len(entries) + 1))
        health = await r.redis.hgetall(keys.feeder("test"))
        assert health["state"] == "ok" and 0 < await r.redis.pttl(keys.feeder("test")) <= 2000
        assert await r.redis.get(keys.lease(0)) is not None
    client = await connect(redis_cluster.url, decode_responses=True)
    try:
        leases = [await client.get(keys.lease(p)) for p in range(r.feeder.config.partitions)]
        assert leases == [None] * r.feeder.config.partitions
        assert not await client.exists(keys.feeder("test"))
    finally:
        await client.aclose()


async def test_a_primary_killed_mid_flow_fails_over_and_books_recover(
    redis_cluster: LocalCluster,
) -> None:
    """SIGKILL of the primary serving the most tokens, mid-flow: its replica is promoted, the
    feeder never exits, and every book equals the truth again within 10 s of the kill."""
    async with rig(redis_cluster, markets=8) as r:
        await wait_for(lambda: synced(r), 10, "all books synced")
        await flowed(r, 300)
        port, _ = max(primary_of(redis_cluster, r.tokens).items(), key=lambda kv: len(kv[1]))
        victim = next(n for n in redis_cluster.nodes if n.port == port)
        killed_at = time.monotonic()
        redis_cluster.kill(victim)
        r.sim.resume()
        await asyncio.to_thread(redis_cluster.wait_promoted, victim)  # the loop runs on
        await flowed(r, 300, timeout=10)
        assert not r.task.done(), "the feeder stopped"
        await assert_books_equal_truth(r, timeout=max(1.0, 10 - (time.monotonic() - killed_at)))
        assert not r.task.done(), "the feeder stopped"
        assert r.feeder.redis_ok


async def feeds_equal_truth(r, feeds: list[MarketFeed], timeout: float) -> None:
    """Pause the flow; wait until every feed's books equal the truth."""
    await r.sim.pause()
    last: list[str] = []

    def converged() -> bool:
        nonlocal last
        last = [m for f in feeds for m in feed_books_equal_truth(f, r.sim, r.tokens)]
        return not last

    try:
        await wait_for(converged, timeout, "the consumers' books to equal the truth", 0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still different: {last[:6]}") from None


async def test_two_market_feeds_follow_a_cluster_through_a_primary_kill(
    redis_cluster: LocalCluster,
) -> None:
    """Two MarketFeed consumers given one node's URL follow every token (on all primaries)
    from the feeder's notices, their books equal the truth; after SIGKILL of a primary they
    equal it again within 10 s, and neither consumer nor feeder dies."""
    async with rig(redis_cluster, markets=8) as r:
        feeds = [MarketFeed(redis_cluster.url, name=f"c{i}") for i in range(2)]
        try:
            for feed in feeds:
                assert await feed.connect() and await feed.subscribe(r.tokens)
                assert isinstance(feed._redis, RedisCluster)
            # synced, not equal to the truth: with the flow running a loaded machine may never
            # catch the books at an instant they equal it (feeds_equal_truth pauses first)
            await wait_for(
                lambda: all(
                    (b := f.get_order_book(t)) is not None and b.status == "synced"
                    for f in feeds
                    for t in r.tokens
                ),
                10,
                "every book of both feeds synced",
            )
            notices = [f._reader.moved.notices for f in feeds]
            await flowed(r, 300)
            await feeds_equal_truth(r, feeds, 5)
            assert all(f._reader.moved.notices > n for f, n in zip(feeds, notices, strict=True))
            port, _ = max(primary_of(redis_cluster, r.tokens).items(), key=lambda kv: len(kv[1]))
            victim = next(n for n in redis_cluster.nodes if n.port == port)
            killed_at = time.monotonic()
            redis_cluster.kill(victim)
            r.sim.resume()
            await asyncio.to_thread(redis_cluster.wait_promoted, victim)
            await flowed(r, 300, timeout=10)
            await feeds_equal_truth(r, feeds, max(1.0, 10 - (time.monotonic() - killed_at)))
            assert all(f._task is not None and not f._task.done() for f in feeds)
            assert not r.task.done(), "the feeder stopped"
        finally:
            for feed in feeds:
                await feed.disconnect()

"""MarketFeed's liveness follows the writers of its tokens: partition leases (`P:lease:{pN}`,
simulated here with SET PX / DEL) decide on a prefix with `P:partitions`; a failover fires
no on_disconnect, a partition with no lease for longer than the lease time does; a prefix
without `P:partitions` keeps the health-key rule; garbage never stops the loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from polybus.consumers import MarketFeed
from polybus.wire import keys
from polybus.wire.partitions import Lease, partition_of
from tests.consumers.bus import T1, T2, Bus
from tests.consumers.test_sync import FAST, Recorder
from tests.support import RedisServer, wait_for


COUNT = 16
P1 = partition_of(T1, COUNT)
P2 = partition_of(T2, COUNT)


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[Bus]:
    redis = redis_server.client()
    yield Bus(redis)
    await redis.aclose()


async def partitioned(bus: Bus, *tokens: str, writer: str = "a", fence: int = 1) -> None:
    """Books of `tokens` written by `writer`, which leads their partitions (leases for 60 s)."""
    await bus.redis.set(keys.partitions(), str(COUNT))
    for token in tokens:
        await bus.book(token)
        await bus.redis.hset(keys.book(token), mapping={"writer": writer, "fence": str(fence)})
        await bus.redis.set(keys.lease(partition_of(token, COUNT)), f"{fence}:{writer}", px=60_000)


async def feed_on(bus: Bus, tokens: list[str], lease_ms: int) -> tuple[MarketFeed, Recorder]:
    """A fast-checking MarketFeed on the bus's Redis, following `tokens`."""
    feed = MarketFeed(redis=bus.redis, **FAST, lease_ms=lease_ms)
    rec = Recorder(feed)
    assert await feed.connect() and await feed.subscribe(tokens)
    return feed, rec


async def test_a_lease_moving_to_another_holder_fires_no_disconnect(bus: Bus) -> None:
    """ "1:a" replaced by "2:b" (and a short gap of no lease at all on another partition):
    no on_disconnect, and on_status brings the new leader's failover entry."""
    assert P1 != P2
    await partitioned(bus, T1, T2)
    feed, rec = await feed_on(bus, [T1, T2], lease_ms=1000)
    await wait_for(lambda: feed._writers.leases.get(P1) == Lease(1, "a"), 5, "the lease seen")
    await bus.redis.set(keys.lease(P1), "2:b", px=60_000)
    await bus.status(T1, "failover", "from a")
    await bus.book(T1, bid="0.47")
    await wait_for(lambda: feed._writers.leases.get(P1) == Lease(2, "b"), 5, "the new holder")
    await bus.redis.delete(keys.lease(P2))  # the old leader's lease lapsed...
    await wait_for(lambda: P2 in feed._writers.missing, 5, "a gap seen")
    await bus.redis.set(keys.lease(P2), "3:b", px=60_000)  # ...and a standby took it at once
    await wait_for(lambda: feed._writers.leases.get(P2) == Lease(3, "b"), 5, "p2 taken over")
    failover = [d for d in rec.of("status") if d["state"] == "failover"]
    assert [(d["asset_id"], d["reason"], d["status"]) for d in failover] == [
        (T1, "from a", "synced")
    ]
    assert "disconnect" not in rec.names() and feed.vouching
    assert feed.get_order_book(T1).bids[0].price_str == "0.47"
    assert feed.get_order_book(T2).status == "synced"
    await feed.disconnect()


async def test_no_lease_for_longer_than_the_lease_time_stops_vouching(bus: Bus) -> None:
    """A lease that lapses and stays gone past the lease time: on_disconnect, that token
    suspect (no_writer), the other not; the same writer back: on_connect without new
    entries; gone again and another holder: suspect until its snapshot arrives."""
    await partitioned(bus, T1, T2)
    feed, rec = await feed_on(bus, [T1, T2], lease_ms=300)
    await wait_for(lambda: P1 in feed._writers.leases, 5, "the lease seen")
    await bus.redis.set(keys.lease(P1), "1:a", px=50)  # its leader stops renewing it
    await wait_for(lambda: "disconnect" in rec.names(), 5, "on_disconnect")
    assert feed.get_order_book(T1).status == "suspect"
    assert feed.get_order_book(T2).status == "synced", "only the unwritten partition"
    assert [d["reason"] for d in rec.of("status") if d["asset_id"] == T1][-1] == "no_writer"
    await bus.redis.set(keys.lease(P1), "1:a", px=60_000)  # the same writer leads again
    await wait_for(lambda: rec.names()[-1] == "connect", 5, "on_connect")
    assert feed.get_order_book(T1).status == "synced"
    await bus.redis.delete(keys.lease(P1))
    await wait_for(lambda: rec.names()[-1] == "disconnect", 5, "on_disconnect again")
    await bus.redis.set(keys.lease(P1), "2:b", px=60_000)
    await wait_for(lambda: feed._writers.leases.get(P1) == Lease(2, "b"), 5, "b leads")
    await wait_for(lambda: not feed._writers.unleased([T1]), 5, "the lease counted back")
    assert feed.get_order_book(T1).status == "suspect", "b has not written it yet"
    assert rec.names()[-1] == "disconnect"
    await bus.status(T1, "failover", "from a")
    await bus.book(T1, bid="0.46")
    await wait_for(lambda: rec.names()[-1] == "connect", 5, "on_connect after b's snapshot")
    assert feed.get_order_book(T1).status == "synced"
    await feed.disconnect()


async def test_without_partitions_the_health_keys_decide_as_before(bus: Bus) -> None:
    """No P:partitions: a health key's expiry stops vouching; once P:partitions and leases
    appear, a vanishing health key no longer does (a killed leader's standby takes over)."""
    await bus.health("run1", ttl_ms=60_000)
    await bus.book(T1)
    feed, rec = await feed_on(bus, [T1], lease_ms=300)
    await wait_for(lambda: bool(feed._watch.live), 5, "the feeder seen")
    assert not feed._writers.partitioned
    await bus.redis.delete(keys.feeder("f1"))
    await wait_for(lambda: "disconnect" in rec.names(), 5, "on_disconnect")
    await bus.health("run1", ttl_ms=60_000)
    await wait_for(lambda: rec.names()[-1] == "connect", 5, "on_connect after the blip")
    await partitioned(bus, T1, writer="f1")
    await wait_for(lambda: feed._writers.leases.get(P1) == Lease(1, "f1"), 5, "leases seen")
    await bus.redis.delete(keys.feeder("f1"))
    await bus.change(T1, "0.45", "7")  # the loop goes on through several checks
    await wait_for(lambda: len(rec.of("price_change")) == 1, 5, "the change")
    checks = feed._next_health
    await wait_for(lambda: feed._next_health > checks + 0.5, 5, "several health checks")
    assert rec.names()[-1] != "disconnect" and feed.vouching
    await feed.disconnect()


async def test_garbage_in_the_partition_and_lease_keys_reads_as_no_lease(bus: Bus) -> None:
    """A lease key of another type, then a garbage partition count: no lease, on_disconnect
    after the lease time, and the loop keeps delivering events."""
    await partitioned(bus, T1)
    feed, rec = await feed_on(bus, [T1], lease_ms=300)
    await wait_for(lambda: P1 in feed._writers.leases, 5, "the lease seen")
    await bus.redis.delete(keys.lease(P1))
    await bus.redis.hset(keys.lease(P1), "not", "a lease")
    await wait_for(lambda: "disconnect" in rec.names(), 5, "on_disconnect")
    await bus.redis.delete(keys.lease(P1))
    await bus.redis.set(keys.lease(P1), "1:a", px=60_000)
    await wait_for(lambda: rec.names()[-1] == "connect", 5, "back")
    await bus.redis.set(keys.partitions(), "sixteen")
    await wait_for(lambda: rec.names()[-1] == "disconnect", 5, "no count, no leader")
    await bus.change(T1, "0.45", "9")
    await wait_for(lambda: len(rec.of("price_change")) == 1, 5, "events still delivered")
    assert not rec.of("error")
    await feed.disconnect()

"""Partition leases on a real redis-server: one leader each, fences that grow, fast hand-over."""

from __future__ import annotations

import asyncio

import pytest

from polybus.feeder.leadership import Leadership
from polybus.wire import keys
from polybus.wire.errors import ConfigError
from tests.support import RedisServer, wait_for


def leader(server: RedisServer, me: str, *, partitions: int = 4, lease_ms: int = 600) -> Leadership:
    return Leadership(
        server.client(), me=me, prefix="t", partitions=partitions, replicas=2, lease_ms=lease_ms
    )


async def test_a_different_partition_count_is_refused(redis_server: RedisServer) -> None:
    """The first feeder records the count; one configured otherwise refuses, naming both."""
    await leader(redis_server, "a").setup()
    with pytest.raises(ConfigError, match=r"POLYBUS_PARTITIONS=8.*use 4"):
        await leader(redis_server, "b", partitions=8).setup()


async def test_one_leader_per_partition_and_a_hot_standby(redis_server: RedisServer) -> None:
    """`a` takes every lease with fences 1..; `b` carries every partition and leads none."""
    a, b = leader(redis_server, "a"), leader(redis_server, "b")
    got = await a.beat(frozenset())
    assert {p: f for p, (f, _) in got.gained.items()} == {0: 1, 1: 1, 2: 1, 3: 1}
    standby = await b.beat(frozenset())
    assert standby.gained == {} and b.led == {} and b.carrying == frozenset(range(4))
    again = await a.beat(frozenset())
    assert again.gained == {} and again.lost == set() and set(a.led) == {0, 1, 2, 3}
    assert await redis_server.client().get(keys.lease(2, "t")) == "1:a"


async def test_expired_leases_go_to_the_standby_with_higher_fences(
    redis_server: RedisServer,
) -> None:
    """The leader stops beating (killed): after the lease the standby leads, fence 2."""
    a, b = leader(redis_server, "a"), leader(redis_server, "b")
    await a.beat(frozenset())
    await b.beat(frozenset())

    async def b_leads() -> bool:
        await b.beat(frozenset(range(4)))
        return len(b.led) == 4

    await wait_for(b_leads, 5, "the standby to take the expired leases")
    assert b.led == {0: 2, 1: 2, 2: 2, 3: 2}
    lost = await a.beat(frozenset())
    assert lost.lost == {0, 1, 2, 3} and a.led == {}


async def test_release_wakes_the_standby_at_once(redis_server: RedisServer) -> None:
    """SIGTERM's release publishes a hand-over: the standby's wake fires well inside a lease."""
    a, b = leader(redis_server, "a", lease_ms=30_000), leader(redis_server, "b", lease_ms=30_000)
    await a.beat(frozenset())
    await b.beat(frozenset())
    listener = asyncio.create_task(b.listen())
    try:

        async def subscribed() -> bool:
            counts = await redis_server.client().pubsub_numsub(keys.handover("t"))
            return bool(counts and counts[0][1])

        await wait_for(subscribed, 5, "the standby to subscribe")
        assert await a.release() == [0, 1, 2, 3]
        await asyncio.wait_for(b.wake.wait(), 2)
        taken = await b.beat(frozenset(range(4)))
        assert {p: prev for p, (_, prev) in taken.gained.items()} == dict.fromkeys(range(4), "a")
    finally:
        listener.cancel()

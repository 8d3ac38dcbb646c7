"""Partition leases on a real Redis Cluster: lease scripts routed by key, release and the
`P:handover` wake-up across nodes."""

from __future__ import annotations

import asyncio
import contextlib

from polybus.feeder.leadership import Leadership
from polybus.redisio import connect
from polybus.wire import keys
from tests.support import LocalCluster, wait_for


async def test_leases_are_taken_released_and_the_standby_woken(
    redis_cluster: LocalCluster,
) -> None:
    """A leader takes every partition (keys on all primaries), releases them in one pipeline,
    and a standby subscribed through the cluster client is woken by the PUBLISH."""
    leader_redis = await connect(redis_cluster.url, decode_responses=True)
    standby_redis = await connect(redis_cluster.url, decode_responses=True)
    leader = Leadership(leader_redis, me="a", prefix="pm", partitions=8, replicas=1, lease_ms=3000)
    standby = Leadership(
        standby_redis, me="b", prefix="pm", partitions=8, replicas=1, lease_ms=3000
    )
    listening = asyncio.create_task(standby.listen())
    try:
        await leader.setup()
        await leader.beat(frozenset())
        assert sorted(leader.led) == list(range(8))
        nodes = {redis_cluster.node_for(keys.lease(p)).port for p in range(8)}
        assert len(nodes) > 1
        await wait_for(lambda: _subscribed(redis_cluster), 5, "the standby to subscribe")
        assert await leader.release() == list(range(8))
        await wait_for(standby.wake.is_set, 5, "the standby's wake-up")
        assert [await leader_redis.get(keys.lease(p)) for p in range(8)] == [None] * 8
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await leader_redis.aclose()
        await standby_redis.aclose()


def _subscribed(cluster: LocalCluster) -> bool:
    """Someone on some node subscribes to the handover channel (subscriptions are per node)."""
    for node in cluster.nodes:
        with node.sync_client() as r:
            if any(int(n) for _, n in r.pubsub_numsub(keys.handover("pm"))):
                return True
    return False

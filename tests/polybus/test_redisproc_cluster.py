"""The local Redis Cluster of tests and benches: it forms, serves every slot, and fails over."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.support import LocalCluster


def cluster_client(cluster: LocalCluster) -> RedisCluster:
    """A blocking cluster client that knows every live node."""
    nodes = [ClusterNode("127.0.0.1", n.port) for n in cluster.nodes if n.alive]
    return RedisCluster(startup_nodes=nodes, decode_responses=True, socket_timeout=2)


def test_cluster_has_three_primaries_each_with_a_replica(redis_cluster: LocalCluster) -> None:
    """The fixture is a real cluster: 3 primaries own all 16384 slots, 3 replicas follow them."""
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    with primaries[0].sync_client() as r:
        info = r.cluster("info")
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_known_nodes"]) == 6
        assert int(info["cluster_slots_assigned"]) == 16384


def test_killed_primary_fails_over_and_keeps_replicated_data(redis_cluster: LocalCluster) -> None:
    """SIGKILL of a primary: its replica is promoted and serves what was replicated to it."""
    key = "pm:book:{42}"
    victim = redis_cluster.node_for(key)
    with cluster_client(redis_cluster) as rc:
        rc.hset(key, "seq", "7")
        with victim.sync_client() as r:
            assert r.wait(1, 2000) == 1  # replicated before the kill
    redis_cluster.kill(victim)
    promoted = redis_cluster.wait_promoted(victim)
    assert promoted.port != victim.port
    assert redis_cluster.node_for(key).port == promoted.port
    with cluster_client(redis_cluster) as rc:
        assert rc.hget(key, "seq") == "7"
    with victim.sync_client() as r, pytest.raises(redis.ConnectionError):
        r.ping()


def test_flush_and_revive_give_the_next_test_a_whole_empty_cluster(
    redis_cluster: LocalCluster,
) -> None:
    """After a kill, the per-test fixture starts the node again (a replica now) and empties it."""
    assert all(n.alive for n in redis_cluster.nodes)
    assert len(redis_cluster.primaries()) == 3
    with cluster_client(redis_cluster) as rc:
        assert rc.dbsize() == 0

"""`polybus health` given one node of a Redis Cluster: feeder and consumer keys on every
primary, partition leases on every primary."""

from __future__ import annotations

import itertools
import time

import orjson

from polybus.wire import keys
from tests.consumers.test_cli import all_synced, polybus
from tests.e2e.harness import rig
from tests.support import LocalCluster, wait_for


def names_on_each_primary(cluster: LocalCluster, key_of, taken: set[int]) -> dict[int, str]:
    """A name per primary port not in `taken`, such that `key_of(name)` lives there."""
    found: dict[int, str] = {}
    wanted = {n.port for n in cluster.primaries()} - taken
    for i in itertools.count():
        port = cluster.node_for(key_of(f"n{i}")).port
        if port in wanted and port not in found:
            found[port] = f"n{i}"
        if set(found) == wanted:
            return found
    raise AssertionError("unreachable")


async def test_health_reads_every_primary(redis_cluster: LocalCluster) -> None:
    """A live feeder on the cluster, a dead feeder's health key and a consumer on each
    other primary, one consumer lagging: `health --json` names exactly the dead feeder and the
    lagging consumer, every partition led by the live feeder; once both are gone, healthy."""
    async with rig(redis_cluster, markets=8) as r:
        await wait_for(lambda: all_synced(r), 10, "synced books")
        live_port = redis_cluster.node_for(keys.feeder("test")).port
        dead = names_on_each_primary(redis_cluster, keys.feeder, {live_port})
        consumers = names_on_each_primary(redis_cluster, keys.consumer, set())
        assert len(dead) == 2 and len(consumers) == 3
        stale = str(int(time.time() * 1000) - 60_000)
        for name in dead.values():
            await r.redis.hset(
                keys.feeder(name),
                mapping={"state": "ok", "updated_ms": stale, "interval_ms": "2000"},
            )
        laggard = consumers[live_port]
        for name in consumers.values():
            lag = "99000" if name == laggard else "10"
            await r.redis.hset(keys.consumer(name), mapping={"lag_ms": lag})
        code, out, err = await polybus("health", "--json", "--redis-url", redis_cluster.url)
        assert code == 1 and out, err
        report = orjson.loads(out)
        assert sorted(report["feeders"]) == sorted(["test", *dead.values()])
        assert sorted(report["consumers"]) == sorted(consumers.values())
        problems = report["problems"]
        assert len(problems) == 3 and f"consumer {laggard} lags 99.0s" in problems
        for name in dead.values():
            assert any(p.startswith(f"feeder {name} silent for 6") for p in problems), problems
        assert report["books"] == {"carried": len(r.tokens), "synced": len(r.tokens)}
        partitions = report["partitions"]
        assert len(partitions) == report["partition_count"] > 1
        assert {p["leader"] for p in partitions} == {"test"}
        await r.redis.delete(*[keys.feeder(n) for n in dead.values()])
        await r.redis.delete(keys.consumer(laggard))
        code, out, err = await polybus("health", "--redis-url", redis_cluster.url)
        assert code == 0, err
        assert out.splitlines()[0] == (
            f"healthy: feeders=1 books: carried={len(r.tokens)} synced={len(r.tokens)} consumers=2"
        )

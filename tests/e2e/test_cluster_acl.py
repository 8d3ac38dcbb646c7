"""The least-privilege ACL users of docs/operations.md on a real Redis Cluster: the single-server
lines plus the cluster rules the "ACLs on a cluster" subsection gives, set on every node."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from polybus import MarketFeed
from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.redisio import Client, connect
from polybus.rig import FAST
from polybus.simulator import SimConfig, Simulator
from polybus.wire import keys
from tests.e2e.harness import mismatches
from tests.e2e.test_acl_tls import SECRETS, documented_acl
from tests.support import LocalCluster, wait_for


DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def cluster_rules() -> dict[str, list[str]]:
    """user -> the rules the docs add on a cluster (its `redis-cli … ACL SETUSER` lines)."""
    rules: dict[str, list[str]] = {}
    for line in DOCS.read_text().splitlines():
        words = shlex.split(line.strip()) if line.strip().startswith("redis-cli ") else []
        if "SETUSER" in words:
            at = words.index("SETUSER")
            rules.setdefault(words[at + 1], []).extend(words[at + 2 :])
    assert set(rules) == {"polybus-feeder", "polybus-strategy"}, rules
    return rules


def denials(cluster: LocalCluster) -> list[str]:
    """Every node's ACL LOG, one `port user: reason object` per denial."""
    out = []
    for node in cluster.nodes:
        with node.sync_client() as r:
            for e in r.execute_command("ACL", "LOG"):
                out += [f"{node.port} {e['username']}: {e['reason']} {e['object']}"] * int(
                    e["count"]
                )
    return out


@pytest.fixture
def acl_cluster(redis_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The shared cluster with the documented users on every node (an ACL is per node: a
    promoted replica must have them too); removed again after the test."""
    extra = cluster_rules()
    for node in redis_cluster.nodes:
        with node.sync_client() as r:
            for user, args in documented_acl().items():
                r.execute_command("ACL", "SETUSER", *args, *extra[user])
            r.execute_command("ACL", "LOG", "RESET")
    try:
        yield redis_cluster
    finally:
        for node in redis_cluster.nodes:
            with contextlib.suppress(Exception), node.sync_client() as r:
                r.execute_command("ACL", "DELUSER", *documented_acl())
                r.execute_command("ACL", "LOG", "RESET")


def user_url(cluster: LocalCluster, user: str) -> str:
    secret = SECRETS["FEEDER_SECRET" if user == "polybus-feeder" else "STRATEGY_SECRET"]
    return cluster.url.replace("redis://", f"redis://{user}:{secret}@")


async def test_feeder_writes_a_cluster_under_the_documented_cluster_acl(
    acl_cluster: LocalCluster,
) -> None:
    """The feeder as polybus-feeder (single-server rules + the cluster rules) finds the
    cluster, writes every book on every primary (leases, health, publish path) and stops
    cleanly, and no node denies it a command; a MarketFeed as polybus-strategy is detected as on
    a cluster and follows every book from the notices, denied nothing either."""
    sim = Simulator(
        SimConfig(markets=6, seed=4, rate=300.0, new_market_every=0.0, resolve_every=0.0)
    )
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    tokens = sim.engine.tokens()
    config = FeederConfig(
        tokens=tuple(tokens),
        ws_url=sim.ws_url,
        redis_url=user_url(acl_cluster, "polybus-feeder"),
        clob_url=sim.http_url,
        feeder_id="acl",
        **FAST,
    )
    feeder = Feeder(config)
    task = asyncio.create_task(feeder.run())
    admin = await connect(acl_cluster.url, decode_responses=True)
    try:
        assert len({acl_cluster.node_for(keys.book(t)).port for t in tokens}) == 3
        await wait_for(lambda: feeder.published > 500, 20, "500 events published")
        assert isinstance(feeder.redis, RedisCluster)
        feed = MarketFeed(user_url(acl_cluster, "polybus-strategy"))
        try:
            assert await feed.connect() and await feed.subscribe(tokens)
            assert isinstance(feed._redis, RedisCluster)
            await wait_for(
                lambda: all(feed.get_order_book(t).status == "synced" for t in tokens), 15, "synced"
            )
            notices = feed._reader.moved.notices
            await wait_for(lambda: feed._reader.moved.notices > notices, 5, "notices read")
            await sim.pause()
            await wait_for(
                lambda: _equal(sim, admin, tokens), 15, "every book to equal the truth", 0.1
            )
            assert await admin.get(keys.lease(0)) is not None
        finally:
            await feed.disconnect()
        assert not task.done(), "the feeder stopped"
        feeder.stop()
        assert await asyncio.wait_for(task, 10) == 0
        assert not await admin.exists(keys.feeder("acl")), "its health key deleted at stop"
        # detection asks INFO first; the strategy user may not run it and falls back
        info = "polybus-strategy: command info"
        assert [d for d in denials(acl_cluster) if not d.endswith(info)] == []
    finally:
        feeder.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await sim.stop()
        await admin.aclose()


async def _equal(sim: Simulator, redis: Client, tokens: list[str]) -> bool:
    return not await mismatches(sim, redis, tokens)

"""polybus.redisio: a REDIS_URL naming one server or any cluster node gets the client that fits."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from polybus import redisio
from tests.support import LocalCluster, RedisServer


async def test_a_single_server_gets_a_plain_client(redis_server: RedisServer) -> None:
    """A server without cluster support is asked once and served by redis.asyncio.Redis."""
    client = await redisio.connect(redis_server.url, decode_responses=True)
    try:
        assert type(client) is aioredis.Redis and not redisio.on_cluster(client)
        assert await client.set("k", "v")
        assert list(await redisio.run_ids(client)) == [""]
    finally:
        await client.aclose()


async def test_upgrade_keeps_the_client_of_a_single_server(redis_server: RedisServer) -> None:
    """On a single server the very client passed in comes back (nothing changes for it)."""
    plain = redis_server.client()
    try:
        assert await redisio.upgrade(plain, redis_server.url) is plain
        assert await plain.ping()
    finally:
        await plain.aclose()


async def test_any_cluster_node_gets_a_cluster_client(redis_cluster: LocalCluster) -> None:
    """A URL naming one node (a replica too) yields a RedisCluster that reaches every slot."""
    primaries = redis_cluster.primaries()
    replica = next(n for n in redis_cluster.nodes if n not in primaries)
    for node in (primaries[0], replica):
        client = await redisio.connect(f"redis://127.0.0.1:{node.port}/0", decode_responses=True)
        try:
            assert isinstance(client, RedisCluster) and redisio.on_cluster(client)
            for token in ("1", "2", "3", "44", "555"):
                await client.hset(f"pm:book:{{{token}}}", "seq", token)
            assert await client.hget("pm:book:{555}", "seq") == "555"
            ids = await redisio.run_ids(client)
            assert len(ids) == 3 and all(len(r) == 40 for r in ids.values())
        finally:
            await client.aclose()


async def test_a_user_denied_info_is_still_told_apart(
    redis_server: RedisServer, redis_cluster: LocalCluster
) -> None:
    """Without INFO in its ACL, CLUSTER INFO decides: refused on a single server, answered on
    a cluster node."""
    node = redis_cluster.primaries()[0]
    for server_port, expected in ((redis_server.port, False), (node.port, True)):
        admin = aioredis.Redis(port=server_port)
        await admin.acl_setuser(
            "noinfo", enabled=True, passwords=["+pw"], commands=["+@all", "-info"], keys=["*"]
        )
        user = aioredis.Redis(port=server_port, username="noinfo", password="pw")
        try:
            assert await redisio.is_cluster(user) is expected
        finally:
            await admin.acl_deluser("noinfo")
            await user.aclose()
            await admin.aclose()

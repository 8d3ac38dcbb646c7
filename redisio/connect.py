"""Cluster mode detected in one place: ask the server, return the client that fits it."""

from __future__ import annotations

from typing import Any, TypeAlias, TypeGuard

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)


__all__ = [
    "REDIS_ERRORS",
    "REDIS_OR_OS_ERRORS",
    "UNSETTLED",
    "Client",
    "cluster",
    "connect",
    "is_cluster",
    "on_cluster",
    "run_ids",
    "upgrade",
]

Client: TypeAlias = aioredis.Redis | RedisCluster
"""What `connect` returns: both speak the same commands; where they differ (scripts in a
pipeline, MULTI, a server's run_id), callers ask `on_cluster`."""

REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)
"""What a Redis call can raise: redis-py's cluster client raises RedisClusterException (no
node serves a slot, …), which is not a RedisError."""

REDIS_OR_OS_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError)
"""REDIS_ERRORS and a socket's own errors: what a loop that must survive Redis catches."""

UNSETTLED: tuple[type[Exception], ...] = (
    ClusterDownError,
    TryAgainError,
    AskError,  # MovedError too: it is an AskError
    RedisClusterException,
)
"""Cluster answers that mean "mid-failover or resharding, try again", not "refused": a
feeder treats them like a lost connection."""


async def is_cluster(redis: aioredis.Redis) -> bool:
    """Whether the server this client talks to is a Redis Cluster node.

    `INFO cluster` says `cluster_enabled:1` on a cluster node. A user whose ACL denies INFO may
    still run `CLUSTER INFO`, which a single server refuses ("cluster support disabled"); when
    both are denied the server is taken for a single one (as polybus always did).
    """
    try:
        info = await redis.info("cluster")
        return str(info.get("cluster_enabled", "0")) == "1"
    except NoPermissionError:
        pass
    try:
        await redis.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
    except ResponseError:  # cluster support disabled, or denied too
        return False
    return True


async def upgrade(redis: aioredis.Redis, url: str, **kwargs: Any) -> Client:
    """`redis` itself for a single server; for a cluster node, a `RedisCluster` for `url`
    (with `kwargs`) and `redis` closed. Raises what redis-py raises when the server cannot
    be reached or refuses the credentials: the caller's retry policy decides."""
    if not await is_cluster(redis):
        return redis
    await redis.aclose()
    return cluster(url, **kwargs)


def cluster(url: str, **kwargs: Any) -> RedisCluster:
    """A cluster client for `url` (any node), connecting lazily. A second one for the same
    cluster has connections of its own: redis-py closes every connection of a client when one
    of its cluster calls fails, replies in flight on healthy nodes with them."""
    return RedisCluster.from_url(url, **kwargs)


async def connect(url: str, **kwargs: Any) -> Client:
    """A client for `url`: `RedisCluster` when the server is a cluster node, else `Redis`
    (`kwargs` go to the client: `decode_responses`, timeouts, …)."""
    redis = aioredis.Redis.from_url(url, **kwargs)
    try:
        return await upgrade(redis, url, **kwargs)
    except BaseException:
        await redis.aclose()
        raise


def on_cluster(redis: object) -> TypeGuard[RedisCluster]:
    """Whether a client is a cluster client (scripts in its pipelines need `execute_command`,
    and each node has its own run_id)."""
    return isinstance(redis, RedisCluster)


async def run_ids(redis: Client) -> dict[str, str]:
    """Each primary's `run_id` by node name ("" for a single server): a new run_id under a
    known name is a restarted server, whose data (without persistence) is gone."""
    if isinstance(redis, RedisCluster):
        infos = await redis.info("server", target_nodes=RedisCluster.PRIMARIES)
        return {str(name): str(info.get("run_id", "")) for name, info in infos.items()}
    info = await redis.info("server")
    return {"": str(info.get("run_id", ""))}

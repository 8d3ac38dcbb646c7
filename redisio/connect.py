"""Cluster mode detected in one place: ask the server, return the client that fits it."""

from __future__ import annotations

from typing import Any, TypeAlias, TypeGuard, TypeVar

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    DataError,
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
    "packing_in_c",
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
    return packing_in_c(RedisCluster.from_url(url, **kwargs))


async def connect(url: str, **kwargs: Any) -> Client:
    """A client for `url`: `RedisCluster` when the server is a cluster node, else `Redis`
    (`kwargs` go to the client: `decode_responses`, timeouts, …)."""
    redis = packing_in_c(aioredis.Redis.from_url(url, **kwargs))
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


def packing_in_c(client: _C) -> _C:
    """`client`, its connections packing commands with hiredis (C) — before it connects.

    redis-py's asyncio connections pack in Python, about 2 µs per argument (its blocking
    ones already use hiredis): a feeder's script call of ~16 arguments cost 36 µs to pack,
    hiredis 4.5 µs. On a cluster every node's connections (those made later too) use it;
    that reaches into redis-py's NodesManager, as polybus.redisio.nodes does.
    """
    if isinstance(client, RedisCluster):
        manager: Any = client.nodes_manager
        kwargs = manager.connection_kwargs
        kwargs["connection_class"] = _packing(kwargs.get("connection_class", Connection))
        for node in [*manager.startup_nodes.values(), *manager.nodes_cache.values()]:
            node.connection_class = _packing(node.connection_class)
    else:
        pool = client.connection_pool
        pool.connection_class = _packing(pool.connection_class)
    return client


_C = TypeVar("_C", aioredis.Redis, RedisCluster)


def _packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` (TCP, TLS or Unix connection) with hiredis's packer (one class per base)."""
    if issubclass(base, _HiredisPacked):
        return base
    packed = _PACKED.get(base)
    if packed is None:
        packed = _PACKED[base] = type(f"Packed{base.__name__}", (_HiredisPacked, base), {})
    return packed


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {}


class _HiredisPacked:
    """pack_command by hiredis; the rest of the connection is redis-py's own."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # as redis-py does: a command name with spaces ("CLIENT SETNAME") goes as its words
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # what redis-py's encoder raises for None, a bool, …
            raise DataError(f"{exc}: {args!r:.200}") from exc

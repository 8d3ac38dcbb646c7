"""Per-key reads on a real Redis Cluster: each key answers or fails alone; a primary out of
reach costs its keys only, the slot map is refreshed, and no node answering is a lost Redis."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError, ResponseError

from polybus.consumers import keyed
from polybus.consumers.keyed import CLOSED_FOR_S, REFRESH_S, out_of_reach, reads
from polybus.consumers.redisio import open_client
from polybus.redisio.nodes import unreached
from tests.support import LocalCluster


KEYS = [f"k:{{{i}}}" for i in range(12)]


def dead_node() -> ClusterNode:
    """A primary on a loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ClusterNode("127.0.0.1", port, socket_connect_timeout=1)


@pytest.fixture
async def client(redis_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    redis = await open_client(redis_cluster.url, socket_timeout=2)
    assert isinstance(redis, RedisCluster)
    for key in KEYS:
        await redis.set(key, key)
    await redis.delete(KEYS[0])
    await redis.lpush(KEYS[0], "a list")
    try:
        yield redis
    finally:
        await redis.aclose()


async def test_each_key_answers_or_fails_alone(client: RedisCluster) -> None:
    """A key of the wrong type fails with its own error, not taken for a primary out of reach;
    every other key, on every primary, answers undecoded."""
    replies = await reads(client, [(k, ("GET", k)) for k in KEYS])
    assert isinstance(replies[0], ResponseError) and not out_of_reach(client, replies[0])
    assert replies[1:] == [k.encode() for k in KEYS[1:]]


async def test_a_primary_out_of_reach_costs_its_keys_then_the_map_is_refreshed(
    client: RedisCluster,
) -> None:
    """A slot the client's map gives to a dead node: the map is refreshed at once and the key
    answers; dead again within REFRESH_S (no refresh yet), only its keys fail unreached, the
    others answer; a refresh later it answers again."""
    slot = client.keyslot(KEYS[3])
    real = client.nodes_manager.slots_cache[slot][0].name
    client.nodes_manager.slots_cache[slot] = [dead_node()]
    assert await reads(client, [(KEYS[3], ("GET", KEYS[3]))]) == [KEYS[3].encode()]
    client.nodes_manager.slots_cache[slot] = [dead_node()]
    replies = await reads(client, [(k, ("GET", k)) for k in KEYS[1:]])
    lost = [k for k, r in zip(KEYS[1:], replies, strict=True) if out_of_reach(client, r)]
    assert lost == [KEYS[3]] and unreached(replies[2])
    assert [r for k, r in zip(KEYS[1:], replies, strict=True) if k != KEYS[3]] == [
        k.encode() for k in KEYS[1:] if k != KEYS[3]
    ]
    await asyncio.sleep(REFRESH_S)
    assert await reads(client, [(KEYS[3], ("GET", KEYS[3]))]) == [KEYS[3].encode()]
    assert client.nodes_manager.slots_cache[slot][0].name == real


async def test_no_node_answering_is_a_lost_redis(client: RedisCluster) -> None:
    """When every node of the map and every startup node is dead, reads raise ConnectionError
    (what the feed takes for a lost Redis), not a per-key failure."""
    await reads(client, [(KEYS[1], ("GET", KEYS[1]))])
    dead = dead_node()
    manager = client.nodes_manager
    for slot in list(manager.slots_cache):
        manager.slots_cache[slot] = [dead]
    manager.nodes_cache = {dead.name: dead}
    manager.startup_nodes = {dead.name: dead}
    await asyncio.sleep(REFRESH_S)
    with pytest.raises(RedisConnectionError):
        await reads(client, [(k, ("GET", k)) for k in KEYS])


def _failing(monkeypatch: pytest.MonkeyPatch, error: str, seconds: float) -> list[float]:
    """Make every key's read meet ConnectionError(error) for `seconds`, then read for real;
    return the times of the tries."""
    real, tries = keyed._per_node, []
    start = time.monotonic()

    async def per_node(redis: RedisCluster, commands: Any) -> list[Any]:
        tries.append(time.monotonic() - start)
        if time.monotonic() - start < seconds:
            return [RedisConnectionError(error) for _ in commands]
        return await real(redis, commands)

    monkeypatch.setattr(keyed, "_per_node", per_node)
    return tries


@pytest.mark.parametrize(
    "error",
    ["Connection closed by server.", "Error UNKNOWN while writing to socket. Connection lost."],
)
async def test_a_connection_closed_again_and_again_is_tried_until_it_answers(
    client: RedisCluster, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    """A healthy node whose connections redis-py keeps closing under the read or the write (as
    through a failover, every other task's failure closes them again) for 0.3 s, four times
    the first retries' window: the key is sent again until it answers, not out of reach."""
    tries = _failing(monkeypatch, error, 0.3)
    assert await reads(client, [(KEYS[1], ("GET", KEYS[1]))]) == [KEYS[1].encode()]
    assert tries[-1] >= 0.3 and len(tries) > 4


async def test_a_refused_connection_is_out_of_reach_within_the_first_retries(
    client: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that refuses new connections (dead) is out of reach after the first retries'
    ~70 ms: the longer patience is for connections closed under a read only."""
    tries = _failing(monkeypatch, "Error 111 connecting to 127.0.0.1:1.", 5.0)
    replies = await reads(client, [(KEYS[1], ("GET", KEYS[1]))])
    assert out_of_reach(client, replies[0]) and len(tries) == 1 + len(keyed._AGAIN_S)
    assert tries[-1] < 0.5 < CLOSED_FOR_S  # the first retries' pauses: 70 ms in all

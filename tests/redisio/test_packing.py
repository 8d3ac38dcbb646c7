"""polybus.redisio.packing_in_c: every client packs commands with hiredis, byte for byte as
redis-py would, on a single server and on every node of a cluster."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from polybus import redisio
from polybus.redisio.connect import _HiredisPacked, _packing
from tests.support import LocalCluster, RedisServer


COMMANDS = [
    ("SET", "k", "v"),
    ("EVALSHA", "a" * 40, 2, "P:book:{1}", "P:stream:{1}", b'[["type","x"]]', 1.5, -3),
    ("CLIENT SETNAME", "polybus"),
    (b"CONFIG GET", "maxmemory"),
    ("XADD", "s", "*", "reason", "a\x1fb \u00e9\x00"),
]


@pytest.mark.parametrize("args", COMMANDS)
def test_the_packed_bytes_are_redis_pys_own(args: tuple) -> None:
    """For str, bytes, int, float, multi-word command names and non-ASCII text, hiredis's
    packing equals redis-py's Python packer's output exactly."""
    plain, packed = Connection(), _packing(Connection)()
    assert b"".join(packed.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_a_value_redis_py_refuses_is_refused_the_same_way() -> None:
    """None or a bool raises redis-py's DataError (not hiredis's TypeError)."""
    packed = _packing(Connection)()
    for bad in (None, True, object()):
        with pytest.raises(DataError):
            packed.pack_command("SET", "k", bad)


def test_each_connection_kind_keeps_its_own_behaviour() -> None:
    """TCP and Unix connections each get one packing subclass of their own, applied once."""
    tcp, unix = _packing(Connection), _packing(UnixDomainSocketConnection)
    assert issubclass(tcp, Connection) and issubclass(unix, UnixDomainSocketConnection)
    assert _packing(Connection) is tcp and _packing(tcp) is tcp and tcp is not unix


async def test_a_single_servers_client_packs_in_c(redis_server: RedisServer) -> None:
    """connect() gives a client whose connections pack with hiredis, and it round-trips."""
    client = await redisio.connect(redis_server.url, decode_responses=True)
    try:
        assert issubclass(client.connection_pool.connection_class, _HiredisPacked)
        assert await client.set("k", "\u00e9\x00x") and await client.get("k") == "\u00e9\x00x"
        with pytest.raises(DataError):
            await client.set("k", None)  # type: ignore[arg-type]
        assert await client.ping()  # the refusal cost nothing
    finally:
        await client.aclose()


async def test_every_cluster_node_packs_in_c(redis_cluster: LocalCluster) -> None:
    """On a cluster, the startup node and every node found later pack with hiredis, and keys
    on all three primaries round-trip."""
    client = await redisio.connect(redis_cluster.url, decode_responses=True)
    try:
        assert redisio.on_cluster(client)
        for i in range(30):
            assert await client.set(f"k{i}", str(i))
        assert [await client.get(f"k{i}") for i in range(30)] == [str(i) for i in range(30)]
        nodes = client.get_nodes()
        assert len(nodes) == 6
        assert all(issubclass(n.connection_class, _HiredisPacked) for n in nodes)
    finally:
        await client.aclose()

"""The consumers' hand-packed XREAD: the bytes redis-py would send, and replies as sent."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from hypothesis import given, strategies as st

from polybus.consumers.redisio import XreadPacker, open_client, send_packed
from polybus.wire import keys
from tests.support import RedisServer


names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
stream_ids = st.tuples(st.integers(0, 2**63), st.integers(0, 2**20)).map(lambda t: f"{t[0]}-{t[1]}")


@given(
    st.lists(st.lists(st.tuples(names, stream_ids), min_size=1, max_size=6), max_size=4),
    st.integers(1, 10**6),
    st.integers(1, 10**6),
)
def test_the_packed_xread_is_what_redis_py_would_send(
    fetches: list[list[tuple[str, str]]], count: int, block: int
) -> None:
    """Fetch after fetch (streams and cursors changing, the packer's caches reused), the
    bytes are exactly redis-py's packing of the same XREAD, non-ASCII names included."""
    packer = XreadPacker()
    conn = aioredis.Redis().connection_pool.make_connection()
    for streams in fetches:
        names_, ids = tuple(k for k, _ in streams), [i for _, i in streams]
        expected = conn.pack_command(
            "XREAD", "COUNT", count, "BLOCK", block, "STREAMS", *names_, *ids
        )
        assert packer.pack(count, block, names_, ids) == b"".join(expected)


async def test_send_packed_reads_entries_as_the_server_sent_them(redis_server: RedisServer) -> None:
    """The reply is the server's own shape (RESP3: stream -> [[id, [name, value, …]]]), and
    an error reply raises as redis-py raises it, leaving the client usable."""
    client = await open_client(redis_server.url, socket_timeout=5)
    key, other = keys.stream("1"), keys.stream("2")
    entry_id = await client.xadd(key, {"type": "x", "seq": "1"})
    await client.set(other, "not a stream")
    packer = XreadPacker()
    reply = await send_packed(client, packer.pack(10, 1, (key,), ["0-0"]))
    assert reply == {key.encode(): [[entry_id.encode(), [b"type", b"x", b"seq", b"1"]]]}
    with pytest.raises(aioredis.ResponseError, match="WRONGTYPE"):
        await send_packed(client, packer.pack(10, 1, (other,), ["0-0"]))
    assert await client.ping()
    await client.aclose()

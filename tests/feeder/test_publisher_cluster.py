"""The publisher on a real Redis Cluster: one pipeline per batch across primaries, and a
primary that lost its script cache (as a promoted replica has) is reloaded and retried."""

from __future__ import annotations

from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.redisio import connect
from polybus.wire import keys
from polybus.wire.events import Book, Status
from tests.support import LocalCluster


TOKENS = [str(10**20 + i) for i in range(30)]


def batch_of(*events, epoch: int = 1, rx: int = 7) -> Batch:
    batch = Batch()
    for event in events:
        batch.add(event, epoch, rx)
    return batch


def snapshot(token: str) -> Book:
    return Book(token, "0xm", "100", (("0.47", "310.5"),), (("0.49", "275"),), "h0")


async def test_one_batch_writes_tokens_on_every_primary(redis_cluster: LocalCluster) -> None:
    """A batch of tokens spread over all three primaries is written whole, each token's book
    and stream in step, and quarantine/markets entries land too."""
    assert len({redis_cluster.node_for(keys.book(t)).port for t in TOKENS}) == 3
    client = await connect(redis_cluster.url, decode_responses=True)
    try:
        pub = Publisher(client)
        batch = batch_of(*(snapshot(t) for t in TOKENS))
        batch.quarantine.append({"raw": "x", "reason": "test", "rx": "1"})
        assert await pub.write(batch) == []
        for token in TOKENS:
            book = await client.hgetall(keys.book(token))
            newest = await client.xrevrange(keys.stream(token), count=1)
            assert book["status"] == "synced" and book["last_id"] == newest[0][0]
        assert await client.xlen(keys.quarantine()) == 1
    finally:
        await client.aclose()


async def test_a_primary_without_the_script_is_reloaded_and_retried(
    redis_cluster: LocalCluster,
) -> None:
    """NOSCRIPT from one primary (its cache is not replicated: a promoted replica has none)
    reloads the step on that primary and sends only those calls again; seq stays contiguous."""
    client = await connect(redis_cluster.url, decode_responses=True)
    try:
        pub = Publisher(client)
        await pub.write(batch_of(*(snapshot(t) for t in TOKENS)))
        with redis_cluster.primaries()[1].sync_client() as r:
            r.script_flush()
        broken = await pub.write(batch_of(*(Status(t, "suspect", "x") for t in TOKENS)))
        assert broken == []
        for token in TOKENS:
            assert await client.hget(keys.book(token), "seq") == "2"
    finally:
        await client.aclose()


async def test_written_tokens_are_announced_per_partition_after_the_batch(
    redis_cluster: LocalCluster,
) -> None:
    """With a partition count, each partition a batch touched gets one `P:moved:{pN}` entry
    naming exactly its written tokens; without one, nothing is announced."""
    from polybus.wire.partitions import partition_of

    client = await connect(redis_cluster.url, decode_responses=True)
    try:
        await Publisher(client).write(batch_of(snapshot(TOKENS[0])))
        assert [await client.exists(keys.moved(p)) for p in range(4)] == [0] * 4
        pub = Publisher(client, partitions=4)
        await pub.write(batch_of(*(snapshot(t) for t in TOKENS)))
        for p in range(4):
            entries = await client.xrange(keys.moved(p))
            assert len(entries) == 1
            named = entries[0][1]["tokens"].split()
            assert sorted(named) == sorted(t for t in TOKENS if partition_of(t, 4) == p)
        assert pub.unannounced == set()
    finally:
        await client.aclose()

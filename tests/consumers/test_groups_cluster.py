"""Work-sharing groups on a real Redis Cluster: members split the entries of tokens on every
primary, new entries reach them from the feeders' notices, a dead member's work is reclaimed."""

from __future__ import annotations

import asyncio

from polybus.consumers.groups import GroupReader, Work
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.redisio import Client, connect
from polybus.wire import keys
from polybus.wire.events import Status
from tests.support import LocalCluster


TOKENS = [str(10**20 + i) for i in range(12)]
PARTITIONS = 4


async def publish(pub: Publisher, per_token: int, start: int = 0) -> None:
    batch = Batch()
    for i in range(start, start + per_token):
        for token in TOKENS:
            batch.add(Status(token, "suspect", str(i)), 1, i)
    await pub.write(batch)


async def gather(members: list[GroupReader], want: int, timeout: float = 10.0) -> list[Work]:
    """Read from every member in turn until `want` entries came, acknowledging them."""
    got: list[Work] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < want and loop.time() < deadline:
        for member in members:
            work = await member.read(count=7, block_ms=200)
            await member.ack(work)
            got += work
    return got


async def test_members_share_every_entry_once_on_a_cluster(redis_cluster: LocalCluster) -> None:
    """Two members get every entry of twelve tokens (on all three primaries) exactly once,
    first from a sweep, then from notices; acknowledged, nothing stays pending."""
    assert len({redis_cluster.node_for(keys.stream(t)).port for t in TOKENS}) == 3
    client: Client = await connect(redis_cluster.url)
    members = [GroupReader(client, "archive", m, TOKENS) for m in ("a", "b")]
    try:
        await client.set(keys.partitions(), str(PARTITIONS))
        pub = Publisher(client, partitions=PARTITIONS)
        await publish(pub, 5)
        await members[0].create()
        first = await gather(members, 60)
        await publish(pub, 3, start=5)
        later = await gather(members, 36)
        ids = [(w.token, w.entry.seq) for w in first + later]
        assert len(ids) == len(set(ids)) == 96
        assert {w.token for w in first + later} == set(TOKENS)
        assert sum(m.moved.notices for m in members) > 0
        for token in TOKENS:
            assert (await client.xpending(keys.stream(token), "archive"))["pending"] == 0
    finally:
        for member in members:
            await member.close()
        await client.aclose()


async def test_a_dead_members_work_is_reclaimed_on_a_cluster(redis_cluster: LocalCluster) -> None:
    """Entries a member took and never acknowledged are reclaimed by another, per stream,
    on every primary."""
    client: Client = await connect(redis_cluster.url)
    dead = GroupReader(client, "archive", "dead", TOKENS)
    live = GroupReader(client, "archive", "live", TOKENS, claim_idle_ms=0)
    try:
        await client.set(keys.partitions(), str(PARTITIONS))
        await publish(Publisher(client, partitions=PARTITIONS), 2)
        await dead.create()
        taken = await dead.read(count=100, block_ms=200)
        assert len(taken) == 24
        claimed = await live.reclaim()
        assert sorted((w.token, w.entry.seq) for w in claimed) == sorted(
            (w.token, w.entry.seq) for w in taken
        )
        assert await live.ack(claimed) == 24
    finally:
        await dead.close()
        await live.close()
        await client.aclose()

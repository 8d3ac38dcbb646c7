"""Following tokens on a real Redis Cluster: notices of moved streams wake the reader, which
reads only those streams; a missed notice costs a sweep or an audit, never an event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio.cluster import RedisCluster

from polybus.consumers.books import TokenBook
from polybus.consumers.cursor import CursorReport
from polybus.consumers.reader import Reader
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.redisio import Client, connect
from polybus.wire import keys
from polybus.wire.events import Book, PriceChange
from polybus.wire.partitions import partition_of
from tests.support import LocalCluster


TOKENS = [str(10**20 + i) for i in range(24)]
PARTITIONS = 4


def snapshot(token: str) -> Book:
    return Book(token, "0xm", "100", (("0.47", "310.5"),), (("0.49", "275"),), "h0")


def change(token: str, size: str) -> PriceChange:
    return PriceChange(token, "101", "bid", "0.47", size, "", "0.47", "0.49")  # type: ignore[arg-type]


async def publish(pub: Publisher, *events: object) -> None:
    batch = Batch()
    for event in events:
        batch.add(event, 1, 7)  # type: ignore[arg-type]
    await pub.write(batch)


async def started(client: Client, tokens: list[str]) -> Reader:
    """A reader following `tokens`, loaded, past its start-up sweeps."""
    await client.set(keys.partitions(), str(PARTITIONS))
    books = {t: TokenBook(t) for t in tokens}
    reader = Reader(books, "pm", CursorReport("t"), block_ms=200)
    reader.moved.sweep_s = 3600.0  # only notices (and the start-up sweeps) from here on
    await reader.load(client, tokens)
    for _ in range(50):  # the first fetch sweeps; each partition's reader asks for one more
        await reader.fetch(client, 200)
        if reader.moved.starts == len(reader.moved._tasks) and not reader.moved.sweep:
            return reader
    raise AssertionError("the partition readers did not start")


@contextlib.asynccontextmanager
async def following(cluster: LocalCluster) -> AsyncIterator[tuple[Client, Publisher, Reader]]:
    """A client, an announcing publisher that wrote every token's book, and a started reader
    following them all; closed after."""
    client = await connect(cluster.url)
    reader: Reader | None = None
    try:
        pub = Publisher(client, partitions=PARTITIONS)
        await publish(pub, *(snapshot(t) for t in TOKENS))
        reader = await started(client, TOKENS)
        yield client, pub, reader
    finally:
        if reader is not None:
            await reader.close()
        await client.aclose()


async def applied(reader: Reader, client: Client, want: int, timeout: float = 5.0) -> list[str]:
    """Fetch and apply until `want` entries were applied; the tokens they were for."""
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(seen) < want and loop.time() < deadline:
        targets, reply, _ = await reader.fetch(client, 200)
        for key, items in reply:
            seen += [keys.token_of(key.decode())] * len(items)
        for _ in reader.entries(targets, reply):
            pass
    return seen


async def getkeys_calls(client: Client) -> int:
    """COMMAND GETKEYS calls every node served (redis-py's way to route an XREAD blindly)."""
    stats = await client.info("commandstats", target_nodes=RedisCluster.ALL_NODES)
    return sum(s.get("cmdstat_command|getkeys", {}).get("calls", 0) for s in stats.values())


async def test_notices_alone_deliver_new_entries(redis_cluster: LocalCluster) -> None:
    """Once started, a reader whose sweeps are off gets every new entry of tokens on all
    three primaries from the notices, reading only the streams named, each XREAD sent to its
    node (no COMMAND GETKEYS round trip per stream)."""
    async with following(redis_cluster) as (client, pub, reader):
        sweeps, getkeys = reader.moved.sweeps, await getkeys_calls(client)
        await publish(pub, change(TOKENS[3], "5"), change(TOKENS[17], "6"))
        seen = await applied(reader, client, 2)
        assert sorted(seen) == sorted([TOKENS[3], TOKENS[17]])
        assert reader.moved.sweeps == sweeps and reader.moved.notices > 0
        assert await getkeys_calls(client) == getkeys
        assert reader.books[TOKENS[17]].seq == 2


async def test_without_notices_the_audit_finds_the_news(redis_cluster: LocalCluster) -> None:
    """Entries written by a publisher that announces nothing reach the reader through the gap
    audit (hash ahead of the book), not lost and not waiting for a sweep."""
    async with following(redis_cluster) as (client, _, reader):
        await publish(Publisher(client), change(TOKENS[5], "9"))  # no partitions: silent
        assert await applied(reader, client, 1, timeout=0.6) == []
        await reader.audit(client)
        assert await applied(reader, client, 1) == [TOKENS[5]]


async def test_a_failed_partition_read_makes_the_next_fetch_a_sweep(
    redis_cluster: LocalCluster,
) -> None:
    """A partition's notice stream that cannot be read (here: not a stream) is retried, and
    the next fetch reads every followed stream, so nothing waits on the broken notices."""
    async with following(redis_cluster) as (client, _, reader):
        sweeps, failures = reader.moved.sweeps, reader.moved.failures
        for p in range(PARTITIONS):
            await client.delete(keys.moved(p))
            await client.set(keys.moved(p), "garbage")
        await publish(Publisher(client), change(TOKENS[8], "3"))
        assert await applied(reader, client, 1) == [TOKENS[8]]
        assert reader.moved.failures > failures and reader.moved.sweeps > sweeps


async def test_a_garbage_notice_costs_a_sweep_not_the_partition(
    redis_cluster: LocalCluster,
) -> None:
    """A notice someone else wrote as garbage (not UTF-8) is stepped over: the next fetch
    sweeps, and the partition's later notices are followed again."""
    async with following(redis_cluster) as (client, pub, reader):
        garbled = partition_of(TOKENS[2], PARTITIONS)
        starts = reader.moved.starts
        await client.xadd(keys.moved(garbled), {"tokens": b"\xff\xfe"})
        await publish(pub, change(TOKENS[2], "4"))
        assert await applied(reader, client, 1) == [TOKENS[2]]
        for _ in range(50):  # its reader restarts from the newest notice (10 s at most)
            if reader.moved.starts > starts and not reader.moved.sweep:
                break
            await reader.fetch(client, 200)
        assert reader.moved.starts > starts
        sweeps, notices = reader.moved.sweeps, reader.moved.notices
        again = next(t for t in TOKENS if partition_of(t, PARTITIONS) == garbled and t != TOKENS[2])
        await publish(pub, change(again, "8"))
        assert await applied(reader, client, 1) == [again]
        assert reader.moved.sweeps == sweeps and reader.moved.notices > notices


async def test_without_a_partition_count_fetches_poll_at_the_block_time(
    redis_cluster: LocalCluster,
) -> None:
    """Before any feeder recorded `P:partitions` there are no notices: each fetch waits its
    block time and reads every stream, never spinning."""
    client = await connect(redis_cluster.url)
    reader = Reader({t: TokenBook(t) for t in TOKENS}, "pm", CursorReport("t"), block_ms=200)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        for _ in range(4):
            await reader.fetch(client, 200)
        assert loop.time() - began >= 0.7
        assert reader.moved.sweeps == 4
    finally:
        await reader.close()
        await client.aclose()

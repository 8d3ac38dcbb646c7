"""Work-sharing groups: split, acknowledge, reclaim from a dead member, tolerate trimming."""

from __future__ import annotations

from polybus.consumers.groups import GroupReader
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.wire import keys
from polybus.wire.events import Status


T1, T2 = "111", "222"


async def publish(redis, n: int) -> None:
    batch = Batch()
    for i in range(n):
        batch.add(Status(T1 if i % 2 else T2, "suspect", str(i)), 1, i)
    await Publisher(redis).write(batch)


async def test_members_split_the_entries_and_ack(redis_server) -> None:
    """Two members together get every entry exactly once; acks empty the pending list."""
    redis = redis_server.client()
    await publish(redis, 40)
    a = GroupReader(redis, "archive", "a", [T1, T2])
    b = GroupReader(redis, "archive", "b", [T1, T2])
    await a.create()
    await b.create()
    got_a = await a.read(count=10, block_ms=100)
    got_b = await b.read(count=100, block_ms=100)
    ids = [(w.token, w.entry.seq) for w in got_a + got_b]
    assert len(ids) == len(set(ids)) == 40
    assert await a.ack(got_a) == len(got_a)
    assert await b.ack(got_b) == len(got_b)
    assert (await redis.xpending(keys.stream(T1), "archive"))["pending"] == 0
    await redis.aclose()


async def test_a_dead_members_entries_are_reclaimed_and_trimmed_ones_skipped(redis_server) -> None:
    """Entries pending on a dead member move to a live one; trimmed ones are acked, not lost."""
    redis = redis_server.client()
    await publish(redis, 20)
    dead = GroupReader(redis, "archive", "dead", [T1, T2])
    live = GroupReader(redis, "archive", "live", [T1, T2], claim_idle_ms=0)
    await dead.create()
    taken = await dead.read(count=100, block_ms=100)  # and then it dies without acking
    assert len(taken) == 20
    await redis.xtrim(keys.stream(T2), maxlen=0)  # its T2 entries are trimmed meanwhile
    claimed = await live.reclaim()
    assert sorted(w.entry.seq for w in claimed) == list(range(1, 11))
    assert all(w.token == T1 for w in claimed)
    assert live.trimmed == 10
    await live.ack(claimed)
    for token in (T1, T2):
        assert (await redis.xpending(keys.stream(token), "archive"))["pending"] == 0
    await redis.aclose()


async def poison_t1(redis_server) -> None:
    """An entry of T1 that cannot be decoded (a non-UTF-8 byte), XADDed by hand."""
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(redis_server.url)
    await raw.xadd(
        keys.stream(T1),
        {b"type": b"status", b"state": b"\xff", b"seq": b"99", b"epoch": b"1", b"rx": b"1"},
    )
    await raw.aclose()


async def test_a_poisoned_entry_is_acknowledged_and_reported_not_left_pending(redis_server) -> None:
    """read() returns every good entry and does not raise; the poisoned one is acked (nothing
    stays pending once the good ones are) and reported to on_error once."""
    redis = redis_server.client()
    await publish(redis, 10)
    await poison_t1(redis_server)
    await publish(redis, 10)
    errors: list[Exception] = []
    member = GroupReader(redis, "archive", "a", [T1, T2], on_error=errors.append)
    await member.create()
    got = await member.read(count=100, block_ms=100)
    assert len(got) == 20 and member.poisoned == 1
    assert len(errors) == 1 and T1 in str(errors[0])
    await member.ack(got)
    for token in (T1, T2):
        assert (await redis.xpending(keys.stream(token), "archive"))["pending"] == 0
    await redis.aclose()


async def test_reclaim_acknowledges_a_poisoned_entry_of_a_dead_member(redis_server) -> None:
    """A poisoned entry pending on a dead member: reclaim() does not raise, hands over the
    good entries, acks and reports the poisoned one."""
    redis = redis_server.client()
    await publish(redis, 6)
    await poison_t1(redis_server)
    dead = GroupReader(redis, "archive", "dead", [T1, T2])
    await dead.create()
    # the dead member read everything (poison included) with a plain client, then died
    await redis.execute_command(
        "XREADGROUP",
        "GROUP",
        "archive",
        "dead",
        "COUNT",
        100,
        "STREAMS",
        keys.stream(T1),
        keys.stream(T2),
        ">",
        ">",
        NEVER_DECODE=True,
    )
    errors: list[Exception] = []
    live = GroupReader(redis, "archive", "live", [T1, T2], claim_idle_ms=0, on_error=errors.append)
    claimed = await live.reclaim()
    assert len(claimed) == 6 and live.poisoned == 1 and len(errors) == 1
    await live.ack(claimed)
    for token in (T1, T2):
        assert (await redis.xpending(keys.stream(token), "archive"))["pending"] == 0
    await redis.aclose()

"""The Lua step's fence on a real redis-server: a lower fence writes nothing, ever."""

from __future__ import annotations

from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.wire import keys
from polybus.wire.events import Book, PriceChange, Status
from tests.support import RedisServer


T = "70431576231964937843803106892715746780871139131450600661571484047788631532544"


def batch_of(*events: object, fence: int | None = None) -> Batch:
    batch = Batch()
    for event in events:
        batch.add(event, 1, 7)  # type: ignore[arg-type]
    if fence is not None:
        batch.fences[T] = fence
    return batch


def book(h: str = "h0") -> Book:
    return Book(T, "0xm", "100", (("0.47", "310"),), (("0.49", "275"),), h)


def delta(size: str) -> PriceChange:
    return PriceChange(T, "101", "bid", "0.47", size, "0.47", "0.49", f"h{size}")


async def test_a_lower_fence_is_refused_and_writes_nothing(redis_server: RedisServer) -> None:
    """B writes under fence 2; A's later write under fence 1 is refused with B's id."""
    redis = redis_server.client()
    a = Publisher(redis, writer="a", fences=lambda t: 1)
    b = Publisher(redis, writer="b", fences=lambda t: 2)
    await a.write(batch_of(book()))
    await b.write(batch_of(delta("5")))
    length = await redis.xlen(keys.stream(T))
    await a.write(batch_of(delta("6")))
    assert a.fenced == {T: "b"}
    assert await redis.xlen(keys.stream(T)) == length
    assert await redis.hmget(keys.book(T), ["writer", "fence", "bid:0.47"]) == ["b", "2", "5"]


async def test_snapshots_and_statuses_name_their_writer(redis_server: RedisServer) -> None:
    """`book` and `status` entries carry `writer`; data entries do not (they are the
    exchange's)."""
    redis = redis_server.client()
    await Publisher(redis, writer="a", fences=lambda t: 1).write(
        batch_of(Status(T, "connected", "epoch 1"), book(), delta("5"))
    )
    entries = [f for _, f in await redis.xrange(keys.stream(T))]
    assert [f.get("writer") for f in entries] == ["a", "a", None]


async def test_a_peek_returns_the_last_entries_before_the_write(redis_server: RedisServer) -> None:
    """A takeover's first write reads, atomically, where the old leader stopped."""
    redis = redis_server.client()
    await Publisher(redis, writer="a", fences=lambda t: 1).write(batch_of(book(), delta("5")))
    b = Publisher(redis, writer="b", fences=lambda t: 2)
    first = batch_of(Status(T, "failover", "from a"))
    first.peek = {T}
    await b.write(first)
    newest = b.before[T]
    assert [fields[fields.index("type") + 1] for _, fields in newest] == ["price_change", "book"]


async def test_a_batch_keeps_the_fence_it_was_queued_under(redis_server: RedisServer) -> None:
    """Queued under fence 1 and written after fence 2 wrote: refused, though the caller's
    gate would now say nothing (the lease is gone)."""
    redis = redis_server.client()
    await Publisher(redis, writer="b", fences=lambda t: 2).write(batch_of(book()))
    late = Publisher(redis, writer="a", fences=lambda t: None)
    await late.write(batch_of(delta("9"), fence=1))
    assert late.fenced == {T: "b"}
    assert await redis.hget(keys.book(T), "bid:0.47") == "310"


async def test_a_token_under_no_fence_is_never_written(redis_server: RedisServer) -> None:
    """A gated publisher drops (and counts) a token it neither queued nor leads."""
    redis = redis_server.client()
    pub = Publisher(redis, writer="a", fences=lambda t: None)
    await pub.write(batch_of(book(), delta("3")))
    assert pub.unfenced == 2
    assert await redis.exists(keys.stream(T)) == 0


async def test_a_feeders_own_older_fence_is_not_refused(redis_server: RedisServer) -> None:
    """A lease that lapsed and was taken again by the same feeder: its batch queued under the
    old fence still goes in (it is the same, ordered queue), nothing is dropped."""
    redis = redis_server.client()
    await Publisher(redis, writer="a", fences=lambda t: 5).write(batch_of(book()))
    same = Publisher(redis, writer="a", fences=lambda t: 5)
    await same.write(batch_of(delta("9"), fence=4))
    assert same.fenced == {}
    assert await redis.hmget(keys.book(T), ["bid:0.47", "fence"]) == ["9", "5"]  # never down

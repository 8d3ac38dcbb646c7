"""`polybus health`: a verdict from feeder health keys, the books they carry, and consumer lag;
and the `retired` status that keeps an uncarried book from turning it red."""

from __future__ import annotations

import time

import orjson

from polybus.consumers.health import check
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.wire import keys
from polybus.wire.events import Book, Status
from tests.e2e.harness import rig
from tests.support import wait_for


CONN_OK = {"id": 0, "state": "subscribed", "silence_s": 0.5}
T = "70431576231964937843803106892715746780871139131450600661571484047788631532544"


async def seed(
    redis,
    *,
    name: str = "f1",
    state: str = "ok",
    conn: dict | None = None,
    tokens: int = 2,
    synced: int = 2,
    age_ms: int = 0,
) -> None:
    await redis.hset(
        keys.feeder(name),
        mapping={
            "state": state,
            "connections": orjson.dumps([conn or CONN_OK]).decode(),
            "tokens": str(tokens),
            "synced": str(synced),
            "updated_ms": str(int(time.time() * 1000) - age_ms),
            "interval_ms": "2000",
        },
    )


async def test_healthy_bus_ignores_books_nobody_carries(redis_server) -> None:
    """Books a live feeder carries decide; retired and left-over books in Redis never count."""
    redis = redis_server.client()
    await seed(redis, tokens=2, synced=2)
    for i, status in enumerate(("synced", "synced", "retired", "suspect", "pending")):
        await redis.hset(keys.book(str(100 + i)), mapping={"status": status})
    report = await check(redis, "pm", 90, 30_000)
    assert report.healthy, report.problems
    assert report.books == {"carried": 2, "synced": 2}
    await redis.aclose()


async def test_each_problem_is_named(redis_server) -> None:
    """No feeder, a dropped connection, unsynced carried books and a lagging consumer each fail."""
    redis = redis_server.client()
    report = await check(redis, "pm", 90, 30_000)
    assert not report.healthy
    assert report.problems == ["no live feeder (no health key): is `polybus feed` running?"]
    await seed(redis, state="degraded", conn={"id": 3, "state": "reconnecting"}, tokens=3, synced=1)
    await redis.hset(keys.consumer("bot"), mapping={"lag_ms": "45000"})
    report = await check(redis, "pm", 90, 30_000)
    assert report.problems == [
        "feeder f1 is degraded",
        "feeder f1 connection 3 is reconnecting",
        "2 of 3 carried books not synced",
        "consumer bot lags 45.0s",
    ]
    await redis.aclose()


def test_cli_exit_code_when_redis_is_unreachable(capsys) -> None:
    """An unreachable Redis exits 2 and says where it looked."""
    from polybus.cli import main

    assert main(["health", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "unreachable" in capsys.readouterr().err


async def test_a_feeder_that_stopped_beating_is_unhealthy(redis_server) -> None:
    """A health hash not refreshed for three intervals means a dead feeder, TTL or not."""
    redis = redis_server.client()
    await seed(redis, tokens=5, synced=0, age_ms=7000)
    report = await check(redis, "pm", 90, 30_000)
    assert report.problems[0].startswith("feeder f1 silent for 7.")
    assert report.books == {"carried": 0, "synced": 0}, "a dead feeder's books are not counted"
    await redis.aclose()


async def test_the_lua_step_retires_with_a_ttl_and_a_snapshot_restores(redis_server) -> None:
    """`retired` folds into status retired and expires book and stream; a later snapshot
    persists both and turns the book synced."""
    redis = redis_server.client()
    pub = Publisher(redis)
    book = Book(T, "0xm", "100", (("0.47", "10"),), (("0.49", "5"),), "h0")
    for events in ([book], [Status(T, "retired", "lease_expired", ttl_ms="60000")]):
        batch = Batch()
        for event in events:
            batch.add(event, 1, 7)
        assert await pub.write(batch) == []
    assert await redis.hget(keys.book(T), "status") == "retired"
    for key in (keys.book(T), keys.stream(T)):
        assert 50_000 < await redis.pttl(key) <= 60_000
    entry = (await redis.xrange(keys.stream(T)))[-1][1]
    assert (entry["state"], entry["ttl_ms"]) == ("retired", "60000")
    batch = Batch()
    batch.add(Status(T, "connected", "subscribe"), 2, 8)
    await pub.write(batch)
    assert await redis.hget(keys.book(T), "status") == "suspect", "carried, not yet snapshotted"
    assert await redis.pttl(keys.book(T)) == -1 and await redis.pttl(keys.stream(T)) == -1
    batch = Batch()
    batch.add(book, 2, 9)
    await pub.write(batch)
    assert await redis.hget(keys.book(T), "status") == "synced"
    await redis.aclose()


async def test_a_retired_token_expires_and_health_stays_green(redis_server) -> None:
    """A real feeder that stops carrying a token retires its book with POLYBUS_RETIRED_TTL; the
    book expires, health stays healthy, and carrying the token again brings it back synced."""
    async with rig(redis_server, markets=2, retired_ttl=1.5) as r:
        redis = r.redis

        async def all_synced() -> bool:
            report = await check(redis, "pm", 90, 30_000)
            return report.healthy and report.books == {"carried": 4, "synced": 4}

        await wait_for(all_synced, 20, "every book synced and health green")
        gone = r.tokens[0]
        assert r.feeder.retire([gone], "market_resolved") == [gone]
        book, stream = keys.book(gone), keys.stream(gone)

        async def retired() -> bool:
            return await redis.hget(book, "status") == "retired"

        await wait_for(retired, 10, "the book retired")
        assert 0 < await redis.pttl(book) <= 1500 and 0 < await redis.pttl(stream) <= 1500

        async def healthy_with_three() -> bool:
            report = await check(redis, "pm", 90, 30_000)
            return report.healthy and report.books == {"carried": 3, "synced": 3}

        await wait_for(healthy_with_three, 10, "health green without the retired book")

        async def expired() -> bool:
            return not await redis.exists(book, stream)

        await wait_for(expired, 10, "the retired book and stream to expire")
        assert (await check(redis, "pm", 90, 30_000)).healthy
        r.feeder.carry([gone])  # carried again (a new lease, say)

        async def back() -> bool:
            return (
                await redis.hget(book, "status") == "synced"
                and await redis.pttl(book) == -1
                and await redis.pttl(stream) == -1
            )

        await wait_for(back, 15, "the token synced again, its keys kept for good")
        await wait_for(all_synced, 10, "health counting it again")


def test_a_consumer_stops_trusting_a_retired_book() -> None:
    """A `retired` status entry turns a consumer's synced book untrusted (consumers/books.py)."""
    from polybus.consumers.books import TokenBook
    from polybus.wire.events import Entry

    book = TokenBook(T)
    book.apply(Entry(Book(T, "0xm", "1", (("0.47", "10"),), (("0.49", "5"),), "h"), 1, 1, 1))
    assert book.status == "synced"
    book.apply(Entry(Status(T, "retired", "market_resolved", ttl_ms="1000"), 2, 1, 2))
    assert book.status == "suspect"

"""One writer per token (issue 10, item 4): a second feeder never fights the first.

Before, each feeder took the other's writes for "Redis lost state" (the Lua step's seq check),
and the two resynced each other's tokens in a loop while `polybus health` said healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from polybus.consumers.health import check
from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.wire import keys
from polybus.wire.events import Book, PriceChange
from tests.e2e.harness import FAST, assert_books_equal_truth, rig
from tests.support import wait_for


T = "70431576231964937843803106892715746780871139131450600661571484047788631532544"


def batch_of(*events, epoch: int = 1) -> Batch:
    batch = Batch()
    for event in events:
        batch.add(event, epoch, 7)
    return batch


def snapshot() -> Book:
    return Book(T, "0xm", "100", (("0.47", "310"),), (("0.49", "275"),), "h0")


def delta(size: str) -> PriceChange:
    return PriceChange(T, "101", "bid", "0.47", size, "0.47", "0.49", "h1")


async def test_a_second_writer_is_refused_and_the_first_never_resyncs(redis_server) -> None:
    """While A's lease is live, B's write is refused with A's id and writes nothing; A goes
    on writing with no continuity alarm (it never sees B's seq)."""
    redis = redis_server.client()
    a = Publisher(redis, writer="A", lease_ms=60_000)
    b = Publisher(redis, writer="B", lease_ms=60_000)
    assert await a.write(batch_of(snapshot())) == []
    book_before = await redis.hgetall(keys.book(T))
    assert book_before["writer"] == "A"
    assert await b.write(batch_of(delta("999"))) == []
    assert b.contested == {T: "A"}
    assert await redis.hgetall(keys.book(T)) == book_before
    assert await redis.xlen(keys.stream(T)) == 1
    for size in ("1", "2", "3"):
        assert await a.write(batch_of(delta(size))) == []  # no `broken`: nothing to resync
    assert (await redis.hgetall(keys.book(T)))["bid:0.47"] == "3"
    await redis.aclose()


async def test_a_lapsed_lease_is_taken_over_once_and_the_old_writer_is_refused(
    redis_server,
) -> None:
    """B takes a token whose writer A stopped writing past its lease; A's next write is then
    refused (B's live lease), not taken for lost state, and the stream stays contiguous."""
    redis = redis_server.client()
    a = Publisher(redis, writer="A", lease_ms=300)
    b = Publisher(redis, writer="B", lease_ms=60_000)
    await a.write(batch_of(snapshot()))

    async def lease_over() -> bool:
        secs, micros = await redis.time()
        lease = int((await redis.hget(keys.book(T), "lease")) or 0)
        return secs * 1000 + micros // 1000 > lease

    await wait_for(lease_over, 10, "A's lease to lapse")
    assert await b.write(batch_of(snapshot())) == []
    assert (await redis.hget(keys.book(T), "writer")) == "B"
    assert await a.write(batch_of(delta("5"))) == []
    assert a.contested == {T: "B"}
    seqs = [int(f["seq"]) for _, f in await redis.xrange(keys.stream(T))]
    assert seqs == [1, 2]
    await redis.aclose()


async def test_a_second_feeder_exits_naming_the_first_and_the_first_is_undisturbed(
    redis_server,
) -> None:
    """`polybus feed` started on tokens a live feeder writes exits 3 naming that feeder's
    id; the first feeder does not resync anything and its books still equal the truth."""
    async with rig(redis_server, markets=3) as r:
        await wait_for(lambda: len(r.feeder.mirror.synced) == len(r.tokens), 20, "synced")
        resubscribes = sum(c.stats.resubscribes for c in r.feeder.connections)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polybus",
            "feed",
            "--tokens",
            ",".join(r.tokens),
            "--redis-url",
            redis_server.url,
            "--ws-url",
            r.sim.ws_url,
            "--feeder-id",
            "second",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 3
        lines = err.decode().strip().splitlines()
        assert "'test'" in lines[-1] and f"{len(r.tokens)} of these tokens" in lines[-1]
        assert sum(c.stats.resubscribes for c in r.feeder.connections) == resubscribes
        await assert_books_equal_truth(r)


async def test_health_is_not_healthy_while_two_feeders_claim_a_token(redis_server) -> None:
    """A feeder asked (by a consumer's lease) for a token another live feeder writes gives
    it up, and `polybus health` reports the clash instead of `healthy`."""
    async with rig(redis_server, markets=2) as r:
        await wait_for(lambda: len(r.feeder.mirror.synced) == len(r.tokens), 20, "synced")
        token = r.tokens[0]
        await r.redis.zadd(keys.interest(), {token: time.time() * 1000 + 60_000})
        config = FeederConfig(
            ws_url=r.sim.ws_url,
            redis_url=redis_server.url,
            feeder_id="other",
            **{**FAST, "interest_interval": 0.2},
        )  # type: ignore[arg-type]
        second = Feeder(config)
        task = asyncio.create_task(second.run())
        try:
            await wait_for(lambda: token in second.conflicts, 20, "the clash to be seen")
            assert token not in second.carried()  # left to the writer that holds it

            async def reported() -> bool:
                report = await check(r.redis, keys.DEFAULT_PREFIX, 90.0, 30_000)
                return (
                    any(
                        "feeder other claims 1 tokens" in p and "test" in p for p in report.problems
                    )
                    and not report.healthy
                )

            await wait_for(reported, 10, "health to report the clash")
            assert (await r.redis.hget(keys.book(token), "writer")) == "test"
        finally:
            second.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)

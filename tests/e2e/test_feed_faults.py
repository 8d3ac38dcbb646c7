"""Simulator → feeder → real redis-server: books equal the truth, through every fault."""

from __future__ import annotations

import asyncio

from polybus.wire import keys
from tests.e2e.harness import assert_books_equal_truth, rig, statuses
from tests.support import wait_for


async def flow(r, seconds: float = 1.0) -> None:
    """Let the simulator's order flow run (the feeder keeps up in real time)."""
    r.sim.resume()
    await asyncio.sleep(seconds)


async def synced(r) -> bool:
    """Every token's hash says synced."""
    for token in r.tokens:
        if await r.redis.hget(keys.book(token), "status") != "synced":
            return False
    return True


async def test_books_equal_truth_after_flow(redis_server) -> None:
    """After plain flow every Redis book equals the simulator's, last_id is the newest entry."""
    async with rig(redis_server) as r:
        await wait_for(lambda: synced(r), 10, "all books synced")
        await flow(r, 2.0)
        await assert_books_equal_truth(r)
        token = r.tokens[0]
        entries = await r.redis.xrange(keys.stream(token))
        assert [int(f["seq"]) for _, f in entries] == list(range(1, len(entries) + 1))
        types = {f["type"] for _, f in entries}
        assert {"status", "book", "price_change"} <= types


async def test_abrupt_drop_marks_suspect_then_resyncs(redis_server) -> None:
    """An abrupt drop writes disconnected in band, the book turns suspect, then synced again."""
    async with rig(redis_server) as r:
        await wait_for(lambda: synced(r), 10, "all books synced")
        await flow(r, 0.5)
        r.sim.drop_all()
        await wait_for(lambda: r.feeder.connections[0].stats.reconnects >= 1, 10, "a reconnect")
        await flow(r, 1.0)
        await assert_books_equal_truth(r)
        states = await statuses(r, r.tokens[0])
        assert states[:3] == ["connected", "disconnected", "resubscribed"]
        assert r.feeder.connections[0].stats.last_reason.startswith("closed:1006")


async def test_silent_stall_is_detected_and_recovered(redis_server) -> None:
    """A socket that answers PONG but sends no data is dropped on the data-silence deadline."""
    async with rig(redis_server) as r:
        await wait_for(lambda: synced(r), 10, "all books synced")
        for conn in r.sim.connections:
            conn.faults.stall = True
        await wait_for(lambda: r.feeder.connections[0].stats.reconnects >= 1, 10, "a reconnect")
        assert r.feeder.connections[0].stats.last_reason == "data_silence"
        await flow(r, 1.0)
        await assert_books_equal_truth(r)


async def test_malformed_and_unknown_frames_are_quarantined(redis_server) -> None:
    """Garbage and unknown event types land in the quarantine stream; books stay exact."""
    async with rig(redis_server) as r:
        await wait_for(lambda: synced(r), 10, "all books synced")
        conn = r.sim.connections[0]
        await conn.send_raw("{this is not json")
        await conn.send_raw('[{"event_type":"surprise","asset_id":"1"}]')
        await wait_for(lambda: _xlen(r, keys.quarantine()), 5, "quarantine entries")
        entries = await r.redis.xrange(keys.quarantine())
        reasons = sorted(f["reason"] for _, f in entries)
        assert reasons == ["malformed_json", "unknown_event_type"]
        await flow(r, 0.5)
        await assert_books_equal_truth(r)


async def _xlen(r, key: str) -> bool:
    return await r.redis.xlen(key) >= 2


async def test_http_429_at_handshake_then_success(redis_server) -> None:
    """Handshakes refused with 429 are retried after a longer pause, then the feed syncs."""
    async with rig(redis_server, rate_limit_delay=0.2) as r:
        r.sim.reject_handshakes(2, status=429)
        r.sim.drop_all()
        await wait_for(lambda: r.feeder.connections[0].stats.rejected >= 2, 10, "two 429s")
        await wait_for(lambda: synced(r), 10, "books synced after the 429s")
        await flow(r, 0.5)
        await assert_books_equal_truth(r)


async def test_legacy_and_duplicate_frames_keep_books_exact(redis_server) -> None:
    """Legacy price_change frames and duplicated frames still give exact books."""
    async with rig(redis_server) as r:
        await wait_for(lambda: synced(r), 10, "all books synced")
        for conn in r.sim.connections:
            conn.faults.legacy = True
            conn.faults.duplicate = True
        await flow(r, 1.5)
        await assert_books_equal_truth(r)
        norm = r.feeder.connections[0].normalizer
        assert norm.counts["filtered.duplicate"] > 0


async def test_redis_restart_mid_flow(redis_server) -> None:
    """Redis killed and restarted mid-flow: books come back suspect-then-synced and exact."""
    async with rig(redis_server) as r:
        await wait_for(lambda: synced(r), 10, "all books synced")
        await flow(r, 0.5)
        r.redis_server.restart()
        old, r.redis = r.redis, r.redis_server.client()  # the test's own connection died too
        await old.aclose()
        await flow(r, 1.5)
        await wait_for(lambda: r.feeder.redis_ok, 10, "the feeder to see Redis again")
        await assert_books_equal_truth(r)
        states = await statuses(r, r.tokens[0])
        assert states[0] == "suspect"


async def test_a_long_redis_outage_does_not_churn_the_sockets(redis_server) -> None:
    """While Redis is down the readers keep reading (PONGs arrive), so no socket is recycled."""
    async with rig(redis_server, outbox_capacity=50, pong_timeout=1.5) as r:
        await wait_for(lambda: synced(r), 10, "all books synced")
        r.redis_server.kill()
        await wait_for(lambda: not r.feeder.redis_ok, 5, "the feeder to notice")
        await asyncio.sleep(3.0)  # two PONG deadlines: a blocked reader would have been dropped
        assert r.feeder.connections[0].stats.reconnects == 0
        assert r.feeder.outbox.discarded > 0
        r.redis_server.start()
        old, r.redis = r.redis, r.redis_server.client()
        await old.aclose()
        await wait_for(lambda: r.feeder.redis_ok, 10, "Redis back")
        await flow(r, 0.5)
        await assert_books_equal_truth(r)

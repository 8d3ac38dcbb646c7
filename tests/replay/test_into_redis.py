"""Raw and golden replays into Redis: the real normalizer/mirror/publisher, exact output."""

from __future__ import annotations

import time

import pytest

from polybus.replay.into_redis import replay_into_redis
from polybus.replay.sessions import SessionError, read_lines
from polybus.wire import keys
from tests.e2e.harness import assert_books_equal_truth, rig
from tests.replay.golden import NAMES, dump, expected, recording, to_text
from tests.support import wait_for


@pytest.mark.parametrize("name", NAMES)
async def test_golden_session_replays_to_its_exact_expected_output(redis_server, name) -> None:
    """Each golden recording, replayed into Redis, gives its checked-in output byte for byte."""
    redis = redis_server.client()
    try:
        await replay_into_redis(recording(name), redis, prefix="pm")
        got = to_text(await dump(redis, "pm"))
    finally:
        await redis.aclose()
    assert got == expected(name).read_text(), (
        f"{name}: replay output changed; if intended, run python -m tests.replay.make_golden"
    )


def test_fault_session_holds_a_drop_a_stall_and_malformed_frames() -> None:
    """The fault golden session really covers what it claims (its expected output shows it)."""
    rows = [line for line in read_lines(expected("faults"))]
    reasons = {r["reason"] for r in rows if r.get("type") == "status"}
    assert {"closed:1006", "data_silence", "epoch 2", "epoch 3"} <= reasons
    quarantined = {r["reason"] for r in rows if r["kind"] == "quarantine"}
    assert {"malformed_json", "unknown_event_type"} <= quarantined
    hashes = [r for r in rows if r["kind"] == "hash"]
    assert hashes and all(h["status"] == "suspect" for h in hashes)  # ends with shutdown


async def test_replay_reproduces_what_the_live_feeder_wrote(redis_server, tmp_path) -> None:
    """A live run's streams and hashes equal (ids and rx aside) the replay of its recording."""
    path = tmp_path / "live.jsonl.gz"
    async with rig(redis_server, markets=2, seed=3, record=str(path)) as r:
        await wait_for(lambda: r.feeder.connections[0].stats.frames > 30, 10, "some frames")
        r.sim.drop_all()
        await wait_for(lambda: r.feeder.connections[0].stats.reconnects >= 1, 10, "reconnect")
        r.sim.resume()
        await assert_books_equal_truth(r)
    redis = redis_server.client()
    try:
        await redis.delete(keys.feeder("test"))
        live = await dump(redis, "pm")
        await replay_into_redis(path, redis, prefix="again")
        assert await dump(redis, "again") == live
    finally:
        await redis.aclose()


async def test_replaying_twice_gives_the_same_streams(redis_server) -> None:
    """Two replays of one file write the same entries (ids and rx aside)."""
    redis = redis_server.client()
    try:
        await replay_into_redis(recording("faults"), redis, prefix="a")
        await replay_into_redis(recording("faults"), redis, prefix="b")
        assert await dump(redis, "a") == await dump(redis, "b")
        assert len(await dump(redis, "a")) > 100
    finally:
        await redis.aclose()


async def test_a_used_prefix_is_refused_unless_cleared(redis_server) -> None:
    """Replaying into a prefix that holds books fails; --clear replaces its contents."""
    redis = redis_server.client()
    try:
        await replay_into_redis(recording("calm"), redis, prefix="pm")
        with pytest.raises(SessionError, match="already holds"):
            await replay_into_redis(recording("calm"), redis, prefix="pm")
        await replay_into_redis(recording("calm"), redis, prefix="pm", clear=True)
        assert to_text(await dump(redis, "pm")) == expected("calm").read_text()
    finally:
        await redis.aclose()


def _times(name: str) -> list[int]:
    return [line["t"] for line in read_lines(recording(name))]


async def test_from_to_keeps_exact_books_and_only_entries_inside(redis_server) -> None:
    """--from/--to: hashes equal a full replay cut at --to; streams hold only entries inside."""
    times = _times("faults")
    start, end = times[len(times) // 3], times[2 * len(times) // 3]
    redis = redis_server.client()
    try:
        await replay_into_redis(recording("faults"), redis, prefix="full", end=end)
        await replay_into_redis(recording("faults"), redis, prefix="cut", start=start, end=end)
        for token in [keys.token_of(k) async for k in redis.scan_iter(match="full:book:*")]:
            full = await redis.hgetall(keys.book(token, "full"))
            cut = await redis.hgetall(keys.book(token, "cut"))
            assert {k: v for k, v in cut.items() if k != "last_id"} == {
                k: v for k, v in full.items() if k != "last_id"
            }
            inside = [
                f
                for _, f in await redis.xrange(keys.stream(token, "full"))
                if int(f["rx"]) >= start
            ]
            got = [f for _, f in await redis.xrange(keys.stream(token, "cut"))]
            assert got == inside and got
            last = await redis.xrevrange(keys.stream(token, "cut"), count=1)
            assert cut["last_id"] == last[0][0]  # the hash still links to its stream
    finally:
        await redis.aclose()


async def test_speed_scales_the_recorded_pacing(redis_server) -> None:
    """--speed 2 takes half the recorded span (plus the work itself); max is much faster."""
    times = _times("faults")
    span = (max(times) - times[0]) / 1e6  # 3.4 s: the pacing dominates, even on a busy machine
    redis = redis_server.client()
    try:
        began = time.monotonic()
        await replay_into_redis(recording("faults"), redis, prefix="max")
        flat = time.monotonic() - began
        began = time.monotonic()
        await replay_into_redis(recording("faults"), redis, prefix="paced", speed=2.0)
        paced = time.monotonic() - began
    finally:
        await redis.aclose()
    assert span / 2 * 0.9 <= paced <= span / 2 + flat + 1.5
    assert flat < paced / 2

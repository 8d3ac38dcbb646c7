"""Stream files: `polybus record` dumps hashes and entries; replaying them restores both."""

from __future__ import annotations

import asyncio

from polybus.replay.into_redis import replay_into_redis
from polybus.replay.sessions import read_lines
from polybus.replay.streamrec import all_tokens, record_streams
from polybus.wire import keys
from tests.e2e.harness import assert_books_equal_truth, rig
from tests.replay.golden import recording
from tests.support import wait_for


def stream_id(text: str) -> tuple[int, int]:
    """A stream id as numbers: `…-10` comes after `…-9` (as strings it would not)."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


async def test_recorded_streams_replay_to_the_same_hashes_and_entries(
    redis_server, tmp_path
) -> None:
    """A stream file taken from a live feed mid-flow (through a drop) replays into another
    prefix with the live hashes and every entry after the recorded hash, seq and rx kept."""
    out = tmp_path / "streams.jsonl.gz"
    stop = asyncio.Event()
    async with rig(redis_server, markets=2, seed=9) as r:
        await wait_for(lambda: r.feeder.connections[0].stats.frames > 20, 10, "some frames")
        task = asyncio.create_task(record_streams(r.redis, out, r.tokens, stop=stop))
        r.sim.resume()
        await wait_for(lambda: r.feeder.connections[0].stats.frames > 60, 10, "more frames")
        r.sim.drop_all()
        await wait_for(lambda: r.feeder.connections[0].stats.reconnects >= 1, 10, "reconnect")
        r.sim.resume()
        await assert_books_equal_truth(r)
        stop.set()
        result = await asyncio.wait_for(task, 10)
        assert result.entries > 0
        await replay_into_redis(out, r.redis, prefix="copy")
        starts = {
            x["token"]: x["fields"]["last_id"] for x in read_lines(out) if x["kind"] == "hash"
        }
        for token in r.tokens:
            live = await r.redis.hgetall(keys.book(token))
            copy = await r.redis.hgetall(keys.book(token, "copy"))
            skip = ("last_id", "writer", "lease", "fence")  # the writer's bookkeeping
            assert {k: v for k, v in copy.items() if k not in skip} == {
                k: v for k, v in live.items() if k not in skip
            }
            after = [
                {k: v for k, v in f.items() if k != "writer"}  # a replay writes anonymously
                for i, f in await r.redis.xrange(keys.stream(token))
                if stream_id(i) > stream_id(starts[token])
            ]
            assert [f for _, f in await r.redis.xrange(keys.stream(token, "copy"))] == after
            newest = await r.redis.xrevrange(keys.stream(token, "copy"), count=1)
            assert copy["last_id"] == newest[0][0]
        assert "disconnected" in {f.get("state") for f in after}


async def test_record_without_tokens_takes_every_book_and_stops_on_duration(
    redis_server, tmp_path
) -> None:
    """No --tokens: every book of the prefix; --duration ends it; the file is self-contained."""
    redis = redis_server.client()
    try:
        await replay_into_redis(recording("calm"), redis, prefix="pm")
        tokens = await all_tokens(redis, "pm")
        assert len(tokens) == 4
        out = tmp_path / "s.jsonl"
        result = await asyncio.wait_for(record_streams(redis, out, tokens, duration=0.2), 5)
        lines = list(read_lines(out))
        assert lines[0]["format"] == "polybus-stream" and result.entries == 0
        assert [x["token"] for x in lines if x["kind"] == "hash"] == tokens
        await replay_into_redis(out, redis, prefix="copy")
        for token in tokens:
            a = await redis.hgetall(keys.book(token, "pm"))
            b = await redis.hgetall(keys.book(token, "copy"))
            assert b.pop("last_id") == "0-0" and a.pop("last_id")
            assert a == b
    finally:
        await redis.aclose()

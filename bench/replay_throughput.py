"""Replay throughput: `python bench/replay_throughput.py [--markets 20] [--seconds 3]`.

Records a busy simulator session with the real feeder (rate 0: as fast as the feeder takes
it), then times `replay_into_redis` at --speed max (published entries/s, the into-Redis
mode) and `--serve` at --speed max with an in-process feeder attached (frames/s sent, and
the feeder's entries/s). Not a test: numbers for the notes.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchkit import FAST, RedisServer, feeder_on_simulator, wait_for

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.replay.into_redis import replay_into_redis
from polybus.replay.serve import ReplayServer


async def _record(path: Path, markets: int, seconds: float) -> list[str]:
    server = RedisServer()
    server.start()
    try:
        async with feeder_on_simulator(server, markets=markets, record=str(path)) as r:
            r.sim.resume()
            await asyncio.sleep(seconds)
            await r.sim.pause()
            return r.tokens
    finally:
        server.close()


async def _into_redis(path: Path) -> None:
    server = RedisServer()
    server.start()
    redis = server.client()
    try:
        result = await replay_into_redis(path, redis, prefix="bench")
        print(
            f"into-redis: {result.lines} lines, {result.published} entries in "
            f"{result.seconds:.2f} s = {result.rate:,.0f} events/s"
        )
    finally:
        await redis.aclose()
        server.close()


async def _serve(path: Path, tokens: list[str]) -> None:
    server = RedisServer()
    server.start()
    replay = ReplayServer(path, drops=False)
    await replay.start()
    config = FeederConfig(
        tokens=tuple(tokens), ws_url=replay.url, redis_url=server.url, feeder_id="bench", **FAST
    )
    feeder = Feeder(config)
    task = asyncio.create_task(feeder.run())
    began = time.perf_counter()
    try:
        await asyncio.wait_for(replay.done.wait(), 600)
        frames = sum(c.stats.frames for c in feeder.connections)
        await wait_for(
            lambda: (
                sum(c.stats.frames for c in feeder.connections) >= replay.sent
                and not len(feeder.outbox)
            ),
            120,
            "the feeder to take every frame",
        )
        seconds = time.perf_counter() - began
        published = -1
        while published != feeder.published:  # the last batch may still be in flight
            published = feeder.published
            await asyncio.sleep(0.2)
        print(
            f"serve: {replay.sent} frames sent at {replay.rate:,.0f} frames/s; the feeder "
            f"published {feeder.published} entries in {seconds:.2f} s = "
            f"{feeder.published / seconds:,.0f} events/s (frames seen {frames})"
        )
    finally:
        feeder.stop()
        await asyncio.wait_for(task, 10)
        await replay.stop()
        server.close()


async def main(markets: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "busy.jsonl.gz"
        tokens = await _record(path, markets, seconds)
        print(f"recorded {path.stat().st_size:,} bytes ({markets} markets, {seconds} s)")
        await _into_redis(path)
        await _serve(path, tokens)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0)
    ns = parser.parse_args()
    asyncio.run(main(ns.markets, ns.seconds))

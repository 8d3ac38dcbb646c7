"""Regenerate the golden sessions' expected output: `python -m tests.replay.make_golden`.

The recordings in tests/data/sessions are the fixed input; their `.expected.jsonl` is what the
real code (normalizer, mirror, publisher, Lua step) makes of them, checked in so any change of
behaviour shows up as a diff. `--record` first records the sessions again from the simulator
(new timestamps: review the diff of the expected output before committing it).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from polybus.replay.into_redis import replay_into_redis
from polybus.wire import keys
from tests.e2e.harness import Rig, assert_books_equal_truth, rig
from tests.replay.golden import NAMES, dump, expected, recording, to_text
from tests.support import RedisServer, wait_for


async def _synced(r: Rig) -> bool:
    for token in r.tokens:
        if await r.redis.hget(keys.book(token), "status") != "synced":
            return False
    return True


async def _flow(r: Rig, seconds: float) -> None:
    r.sim.resume()
    await asyncio.sleep(seconds)


async def _calm(r: Rig) -> None:
    """Plain flow on two markets."""
    await _flow(r, 1.0)


async def _faults(r: Rig) -> None:
    """Malformed and unknown frames, an abrupt drop, then a silent stall."""
    conn = r.sim.connections[0]
    await conn.send_raw("{bad")
    await conn.send_raw('[{"event_type":"surprise","asset_id":"1"}]')
    await _flow(r, 0.4)
    r.sim.drop_all()
    feeder_conn = r.feeder.connections[0]
    await wait_for(lambda: feeder_conn.stats.reconnects >= 1, 10, "a reconnect after the drop")
    await wait_for(lambda: _synced(r), 10, "books synced after the drop")
    await _flow(r, 0.4)
    r.sim.set_stall(True)
    await wait_for(lambda: feeder_conn.stats.reconnects >= 2, 10, "a reconnect after the stall")
    await wait_for(lambda: _synced(r), 10, "books synced after the stall")
    await _flow(r, 0.4)


SCRIPTS: dict[str, Callable[[Rig], Awaitable[None]]] = {"calm": _calm, "faults": _faults}


async def record(name: str, path: Path) -> None:
    """Record one golden session from the simulator with the real feeder's --record."""
    path.unlink(missing_ok=True)  # noqa: ASYNC240 - a one-off script step
    server = RedisServer()
    server.start()
    try:
        async with rig(server, markets=2, seed=11, rate=150.0, record=str(path)) as r:
            await wait_for(lambda: _synced(r), 10, "all books synced")
            await SCRIPTS[name](r)
            await assert_books_equal_truth(r)
    finally:
        server.close()


async def derive(name: str) -> str:
    """The expected output of a recording: replayed into a private Redis, then dumped."""
    server = RedisServer()
    server.start()
    redis = server.client()
    try:
        await replay_into_redis(recording(name), redis, prefix="pm")
        return to_text(await dump(redis, "pm"))
    finally:
        await redis.aclose()
        server.close()


async def main(again: bool) -> None:
    for name in NAMES:
        if again:
            await record(name, recording(name))
        expected(name).write_text(await derive(name))
        print(
            f"{name}: {recording(name).stat().st_size} bytes recorded, "
            f"{len(expected(name).read_text().splitlines())} expected rows"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--record", action="store_true", help="record the sessions again first")
    asyncio.run(main(parser.parse_args().record))

"""How long the resync ladder takes to rescue silently lost tokens. Not a test.

    python bench/ladder_timing.py [--timeout 2] [--markets 20] [--lost 5] [--runs 3]

Simulator (its first connection silently loses `--lost` tokens, REST still answering) →
an in-process feeder → a private redis-server. For each run, prints when each lost token's
book turned `synced` (by REST, rung 2) and when a fresh socket took it over (rung 3), in
seconds after start and in units of WS_SNAPSHOT_TIMEOUT, and whether any neighbour ever left
`synced` (it must not).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

import structlog

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.redisproc import private_redis
from polybus.simulator import SimConfig, Simulator
from polybus.wire import keys


async def one_run(timeout: float, markets: int, lost_n: int, seed: int) -> dict[str, float]:
    sim = Simulator(SimConfig(markets=markets, seed=seed, rate=200.0))
    await sim.start()
    redis_proc = private_redis()
    tokens = sim.engine.tokens()
    lost = tokens[1 : 1 + 2 * lost_n : 2]
    sim.lose_on_next_connection(lost)
    config = FeederConfig(
        tokens=tuple(tokens),
        ws_url=sim.ws_url,
        clob_url=sim.http_url,
        redis_url=redis_proc.url,
        feeder_id="ladder",
        snapshot_timeout=timeout,
        stats_interval=3600.0,
        connect_stagger=0.0,
    )
    feeder = Feeder(config)
    start = time.monotonic()
    task = asyncio.create_task(feeder.run())
    synced_at: dict[str, float] = {}
    adopted_at: dict[str, float] = {}
    neighbours_ok = True
    try:
        while len(adopted_at) < len(lost) and time.monotonic() - start < timeout * 6:
            await asyncio.sleep(0.02)
            now = time.monotonic() - start
            owners = {t: c for c in feeder.connections for t in c.owned}
            for token in lost:
                status = await feeder.redis.hget(keys.book(token), "status")
                if status == "synced":
                    synced_at.setdefault(token, now)
                if token in owners and owners[token].cid != 0:
                    adopted_at.setdefault(token, now)
            stream_states = [
                f.get("state")
                for token in tokens
                if token not in lost
                for _, f in await feeder.redis.xrevrange(keys.stream(token), count=5)
                if f.get("type") == "status"
            ]
            neighbours_ok &= all(s == "connected" for s in stream_states)
    finally:
        feeder.stop()
        await asyncio.wait_for(task, 10)
        await sim.stop()
        redis_proc.stop()
    return {
        "synced_max": max(synced_at.values(), default=float("nan")),
        "adopted_max": max(adopted_at.values(), default=float("nan")),
        "rescued": float(len(adopted_at)),
        "neighbours_ok": float(neighbours_ok),
    }


async def main_async(args: argparse.Namespace) -> None:
    t = args.timeout
    rows = [await one_run(t, args.markets, args.lost, seed) for seed in range(1, args.runs + 1)]
    for i, row in enumerate(rows, 1):
        print(
            f"run {i}: {int(row['rescued'])}/{args.lost} lost tokens rescued; synced by REST "
            f"at {row['synced_max']:.2f}s ({row['synced_max'] / t:.2f}×T), on a fresh socket "
            f"at {row['adopted_max']:.2f}s ({row['adopted_max'] / t:.2f}×T); neighbours "
            f"never left synced: {bool(row['neighbours_ok'])}"
        )
    synced = statistics.median(r["synced_max"] for r in rows) / t
    adopted = statistics.median(r["adopted_max"] for r in rows) / t
    print(
        f"WS_SNAPSHOT_TIMEOUT T={t}s; median: synced {synced:.2f}×T, on a fresh socket "
        f"{adopted:.2f}×T (target ≤ 3×T)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=2.0, help="WS_SNAPSHOT_TIMEOUT")
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--lost", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

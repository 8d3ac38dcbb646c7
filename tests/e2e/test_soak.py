"""The issue's done-when: 60 s of flow over 20 markets, 3 drops and a silent stall, no crash."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import orjson

from polybus.simulator import SimConfig, Simulator
from polybus.wire import keys
from tests.e2e.harness import assert_redis_equals_truth
from tests.support import wait_for


FLOW_SECONDS = 60.0


async def health(redis, feeder_id: str) -> list[dict]:
    """The connections list of the feeder's health hash ([] while absent)."""
    raw = await redis.hget(keys.feeder(feeder_id), "connections")
    return orjson.loads(raw) if raw else []


async def test_sixty_seconds_with_drops_and_a_stall(redis_server, tmp_path) -> None:
    """A `polybus feed` process survives 3 drops and a stall; every book then equals the truth."""
    sim = Simulator(
        SimConfig(markets=20, seed=11, rate=400.0, new_market_every=0.0, resolve_every=0.0)
    )
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    tokens = sim.engine.tokens()
    env = {
        **os.environ,
        "POLYBUS_TOKENS": ",".join(tokens),
        "WS_MARKET_URL": sim.ws_url,
        "REDIS_URL": redis_server.url,
        "POLYBUS_FEEDER_ID": "soak",
        "WS_TOKENS_PER_CONNECTION": "15",
        "WS_PING_INTERVAL": "1",
        "WS_PONG_TIMEOUT": "5",
        "WS_SILENCE_TIMEOUT": "30",
        "WS_RECONNECT_BASE_DELAY": "0.1",
        "WS_RECONNECT_MAX_DELAY": "1",
        "WS_CONNECT_STAGGER": "0.1",
        "POLYBUS_HEALTH_INTERVAL": "0.5",
        "POLYBUS_HEALTH_TTL": "3",
        "POLYBUS_STATS_INTERVAL": "10",
        "POLYBUS_LOG_FORMAT": "json",
    }
    log = (tmp_path / "feeder.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus", "feed", stdout=log, stderr=log, env=env, cwd=tmp_path
    )
    redis = redis_server.client()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await wait_for(lambda: sim_connections(sim, 3), 10, "3 shards connected")
        await asyncio.sleep(3)
        stalled = sim.connections[0]
        stalled.faults.stall = True  # answers PONG, sends no data: only data silence shows it
        for _ in range(3):
            await asyncio.sleep(8)
            sim.connections[-1].drop()
        await wait_for(lambda: stalled.closed, 40, "the stalled socket to be dropped by the feeder")
        await asyncio.sleep(max(0.0, FLOW_SECONDS - (loop.time() - started)))
        conns = await health(redis, "soak")
        reasons = {c["last_reason"] for c in conns}
        assert sum(c["reconnects"] for c in conns) >= 4, conns
        assert "data_silence" in reasons or any(
            "data_silence" in line for line in (tmp_path / "feeder.log").read_text().splitlines()
        )
        assert proc.returncode is None, "the feeder process crashed"
        await assert_redis_equals_truth(sim, redis, tokens, timeout=20)
        assert proc.returncode is None, "the feeder process crashed while converging"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert await redis.exists(keys.feeder("soak")) == 0, "health key deleted on exit"
        last = await redis.xrevrange(keys.stream(tokens[0]), count=1)
        assert (last[0][1]["state"], last[0][1]["reason"]) == ("disconnected", "shutdown")
        assert await redis.hget(keys.book(tokens[0]), "status") == "suspect", "nobody vouches now"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
        await sim.stop()
        await redis.aclose()


def sim_connections(sim: Simulator, n: int) -> bool:
    """The simulator has at least n live, subscribed connections."""
    return sum(1 for c in sim.connections if c.subscribed) >= n

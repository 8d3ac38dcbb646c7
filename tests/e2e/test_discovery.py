"""`polybus feed --top N` against the simulator's Gamma twin (pick, add new, retire resolved)
and against a hostile Gamma (nothing it answers stops the feeder)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.feeder.metrics import FeederCollector
from polybus.simulator import SimConfig, Simulator
from polybus.wire import keys
from tests.e2e.harness import FAST
from tests.feeder.hostile_gamma import BROKEN, HostileGamma, sim_markets
from tests.support import wait_for


async def all_synced(redis, tokens) -> bool:
    """Every token's book hash says synced."""
    for token in tokens:
        if await redis.hget(keys.book(token), "status") != "synced":
            return False
    return True


async def test_top_markets_new_market_and_resolution(redis_server) -> None:
    """The feeder carries the top markets, adds a new one when room, retires a resolved one."""
    sim = Simulator(SimConfig(markets=3, seed=5, rate=100.0))
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    config = FeederConfig(
        ws_url=sim.ws_url,
        redis_url=redis_server.url,
        feeder_id="disc",
        top=4,
        gamma_url=sim.http_url,
        gamma_interval=0.3,
        tokens_per_connection=2,
        **FAST,
    )  # type: ignore[arg-type]
    feeder = Feeder(config)
    task = asyncio.create_task(feeder.run())
    redis = redis_server.client()
    try:
        first = sim.engine.tokens()
        await wait_for(lambda: sorted(feeder.carried()) == sorted(first), 10, "top markets carried")
        await wait_for(lambda: all_synced(redis, first), 10, "their books synced")
        assert len(feeder.connections) == 3, "six tokens at two per connection"
        market = sim.engine.market(first[0])
        assert market is not None

        async def described() -> bool:
            got = await redis.hmget(keys.book(first[0]), ["question", "outcome"])
            return got == [market.question, "Yes"]

        await wait_for(described, 5, "question and outcome in the book hash")

        [new] = sim.engine.new_market()  # broadcast to every connection: three copies arrive
        added = new["assets_ids"]
        await wait_for(lambda: set(added) <= set(feeder.carried()), 10, "the new market carried")
        await wait_for(lambda: all_synced(redis, added), 10, "the new market's books synced")

        gone = sim.engine.market(first[0])
        assert gone is not None
        sim.engine.resolve(gone)
        await wait_for(lambda: first[0] not in feeder.carried(), 10, "resolved market retired")
        assert first[1] not in feeder.carried()
        await wait_for(lambda: _status(redis, first[0], "retired"), 5, "resolved book retired")

        lifecycle = [(f["type"], f["market"]) for _, f in await redis.xrange(keys.markets())]
        assert lifecycle == [
            ("new_market", new["market"]),
            ("market_resolved", gone.condition_id),
        ], "each exactly once"
        assert not task.done()
    finally:
        feeder.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await sim.stop()
        await redis.aclose()


async def _status(redis, token: str, want: str) -> bool:
    return await redis.hget(keys.book(token), "status") == want


async def test_top_survives_every_broken_gamma_answer(redis_server) -> None:
    """`feed --top` against a Gamma that answers every broken way keeps running, keeps its
    markets carried and synced, logs each failed poll, and resumes once Gamma is good."""
    sim = Simulator(SimConfig(markets=3, seed=6, rate=100.0))
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    gamma = HostileGamma(sim_markets(sim))
    await gamma.start()
    config = FeederConfig(
        ws_url=sim.ws_url,
        redis_url=redis_server.url,
        feeder_id="hostile",
        top=3,
        gamma_url=gamma.url,
        gamma_interval=0.2,
        tokens_per_connection=6,
        **FAST,
    )  # type: ignore[arg-type]
    feeder = Feeder(config)
    assert feeder.discovery is not None
    feeder.discovery.timeout = aiohttp.ClientTimeout(total=1.0)  # the "stall" mode's bound
    redis = redis_server.client()
    with capture_logs() as logs:
        task = asyncio.create_task(feeder.run())
        try:
            tokens = sim.engine.tokens()
            await wait_for(lambda: sorted(feeder.carried()) == sorted(tokens), 10, "top carried")
            await wait_for(lambda: all_synced(redis, tokens), 10, "their books synced")
            gamma.script = [*BROKEN, "good"]
            await wait_for(
                lambda: task.done() or set(BROKEN) <= set(gamma.served), 60, "every broken answer"
            )
            assert not task.done(), "the feeder died of a Gamma answer"
            assert sorted(feeder.carried()) == sorted(tokens), "what it had is still carried"
            assert await all_synced(redis, tokens)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(FeederCollector(feeder))
            assert "polybus_gamma_poll_failures_total" in generate_latest(registry).decode()
            polls = feeder.discovery.polls
            await wait_for(lambda: feeder.discovery.polls > polls, 10, "a good poll again")
        finally:
            feeder.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            await gamma.stop()
            await sim.stop()
            await redis.aclose()
    failed = [e for e in logs if e["event"] == "feeder.gamma.poll_failed"]
    # Every failed poll is logged; aiohttp itself retries a dropped request once, so two
    # modes can share one poll, and the empty listing is not a failure.
    assert len(failed) == feeder.discovery.failures >= len(BROKEN) - 4
    assert all(e["retry_in"] <= 1.0 * 1.01 or "429" in e["error"] for e in failed)

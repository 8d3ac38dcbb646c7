"""What the benches share: waiting with a timeout, fast feeder timings, a simulator+feeder pair.

Benches import polybus and this module only, never `tests/` (a bench is not a test and must
run from an installed polybus). The private Redis they measure against is
`polybus.redisproc.RedisServer`, the same one the tests start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from polybus.feeder.app import Feeder
from polybus.feeder.config import ENV, FeederConfig
from polybus.redisproc import RedisServer
from polybus.simulator import SimConfig, Simulator


__all__ = ["FAST", "Pair", "RedisServer", "fast_env", "feeder_on_simulator", "wait_for"]

FAST: dict[str, Any] = dict(
    ping_interval=0.5,
    pong_timeout=3.0,
    silence_timeout=2.0,
    snapshot_timeout=2.0,
    reconnect_base_delay=0.05,
    reconnect_max_delay=0.5,
    rate_limit_delay=0.3,
    connect_stagger=0.0,
    health_interval=0.3,
    health_ttl=2.0,
    stats_interval=3600.0,
)
"""Feeder timings for benches: production code paths on a shorter clock."""


def fast_env(**overrides: str) -> dict[str, str]:
    """FAST as environment variables, for a `polybus feed` child process.

    `silence_timeout` stays at its default: the env loader refuses a deadline below 30 s
    (quiet markets are normal), and a bench on a busy simulator never reaches it anyway."""
    env = {ENV[k]: str(v) for k, v in FAST.items() if k != "silence_timeout"}
    return {**env, "POLYBUS_LOG_FORMAT": "json", **overrides}


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str = "condition",
    interval: float = 0.02,
) -> None:
    """Poll `predicate` until true, or raise TimeoutError after `timeout` s naming `what`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Pair:
    """A running simulator and the feeder carrying all its tokens."""

    sim: Simulator
    feeder: Feeder
    tokens: list[str]


@contextlib.asynccontextmanager
async def feeder_on_simulator(
    server: RedisServer, *, markets: int, seed: int = 1, rate: float = 0.0, **feeder: Any
) -> AsyncIterator[Pair]:
    """Start a simulator and a feeder on all its tokens, writing to `server`; stop both after."""
    sim = Simulator(
        SimConfig(markets=markets, seed=seed, rate=rate, new_market_every=0.0, resolve_every=0.0)
    )
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    tokens = sim.engine.tokens()
    config = FeederConfig(
        tokens=tuple(tokens),
        ws_url=sim.ws_url,
        redis_url=server.url,
        clob_url=sim.http_url,
        feeder_id="bench",
        **{**FAST, **feeder},
    )
    app = Feeder(config)
    task = asyncio.create_task(app.run())
    try:
        yield Pair(sim, app, tokens)
    finally:
        app.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await sim.stop()

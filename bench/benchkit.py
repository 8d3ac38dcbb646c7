"""What the benches share: a simulator+feeder pair, and (from polybus.rig) waiting with a
timeout and the feeder's fast timings.

Benches import polybus and this module only, never `tests/` (a bench is not a test and must
run from an installed polybus). The private Redis they measure against is
`polybus.redisproc.RedisServer`, the same one the tests start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.redisproc import LocalCluster, RedisServer
from polybus.rig import FAST, fast_env, wait_for
from polybus.simulator import SimConfig, Simulator


__all__ = [
    "FAST",
    "Pair",
    "RedisServer",
    "cpu_seconds",
    "fast_env",
    "feeder_on_simulator",
    "renumbered",
    "tokens_of",
    "until_synced",
    "wait_for",
]


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def renumbered(entries: list[Any], n: int) -> Iterator[dict[bytes, Any]]:
    """`n` copies of stream entries' fields (bytes keys), cycling through `entries`, with
    `seq` and `rx` counting on as a feeder's would: a long stream to size (MEMORY USAGE)."""
    seq, rx = 0, 1_760_000_000_000_000
    for i in range(n):
        fields = dict(entries[i % len(entries)])
        seq, rx = seq + 1, rx + 2_000
        fields[b"seq"], fields[b"rx"] = str(seq).encode(), str(rx).encode()
        yield fields


async def until_synced(feed: Any, tokens: list[str]) -> None:
    """Wait until every one of a MarketFeed's books is synced (a bench consumer's start)."""
    while not all((b := feed.get_order_book(t)) and b.status == "synced" for t in tokens):
        await asyncio.sleep(0.05)


def tokens_of(n: int) -> list[str]:
    """`n` token ids, the same in every process of a bench (even n: YES/NO pairs)."""
    return [str(10**20 + i) for i in range(n)]


@dataclass
class Pair:
    """A running simulator and the feeder carrying all its tokens."""

    sim: Simulator
    feeder: Feeder
    tokens: list[str]


@contextlib.asynccontextmanager
async def feeder_on_simulator(
    server: RedisServer | LocalCluster,
    *,
    markets: int,
    seed: int = 1,
    rate: float = 0.0,
    **feeder: Any,
) -> AsyncIterator[Pair]:
    """Start a simulator and a feeder on all its tokens, writing to `server` (a cluster: given
    one node's URL, the feeder finds the rest); stop both after."""
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

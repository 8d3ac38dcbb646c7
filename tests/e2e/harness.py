"""End-to-end harness: simulator → feeder → a private redis-server (or a local Redis Cluster),
and the truth check."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.redisio import Client, connect
from polybus.rig import FAST
from polybus.simulator import SimConfig, Simulator
from polybus.wire import keys
from tests.support import LocalCluster, RedisServer, wait_for


@dataclass
class Rig:
    sim: Simulator
    redis_server: RedisServer | LocalCluster
    redis: Client
    feeder: Feeder
    task: asyncio.Task[int]
    tokens: list[str]


@contextlib.asynccontextmanager
async def rig(
    redis_server: RedisServer | LocalCluster,
    *,
    markets: int = 6,
    seed: int = 7,
    rate: float = 300.0,
    sim_options: dict[str, object] | None = None,
    **feeder: object,
) -> AsyncIterator[Rig]:
    """Start simulator and feeder on all the simulator's tokens; stop both afterwards.

    With a LocalCluster, the feeder is given the URL of one node (it finds the cluster
    itself) and `Rig.redis` is a cluster client."""
    sim = Simulator(
        SimConfig(
            markets=markets,
            seed=seed,
            rate=rate,
            new_market_every=0.0,
            resolve_every=0.0,
            **(sim_options or {}),
        )
    )  # type: ignore[arg-type]
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    tokens = sim.engine.tokens()
    options = {**FAST, **feeder}
    config = FeederConfig(
        tokens=tuple(tokens),
        ws_url=sim.ws_url,
        redis_url=redis_server.url,
        clob_url=sim.http_url,
        feeder_id="test",
        **options,
    )  # type: ignore[arg-type]
    app = Feeder(config)
    task = asyncio.create_task(app.run())
    redis: Client = (
        await connect(redis_server.url, decode_responses=True)
        if isinstance(redis_server, LocalCluster)
        else redis_server.client()
    )
    try:
        yield Rig(sim, redis_server, redis, app, task, tokens)
    finally:
        app.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await sim.stop()
        await redis.aclose()


def levels_of(book: dict[str, str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(bids best first, asks best first) from a book hash's bid:/ask: fields."""
    from decimal import Decimal

    bids = sorted(
        ((k[4:], v) for k, v in book.items() if k.startswith("bid:")),
        key=lambda lv: Decimal(lv[0]),
        reverse=True,
    )
    asks = sorted(
        ((k[4:], v) for k, v in book.items() if k.startswith("ask:")), key=lambda lv: Decimal(lv[0])
    )
    return bids, asks


async def mismatches(sim: Simulator, redis: Client, tokens: list[str]) -> list[str]:
    """Tokens whose Redis book differs from the simulator's truth, or is not synced/current."""
    bad = []
    for token in tokens:
        book = await redis.hgetall(keys.book(token))
        truth = sim.engine.true_book(token)
        bids, asks = levels_of(book)
        newest = await redis.xrevrange(keys.stream(token), count=1)
        current = bool(newest) and book.get("last_id") == newest[0][0]
        if (tuple(bids), tuple(asks)) != (tuple(truth[0]), tuple(truth[1])):
            bad.append(f"{token[:8]}:levels")
        elif book.get("status") != "synced" or not current:
            bad.append(f"{token[:8]}:{book.get('status')}:current={current}")
    return bad


async def assert_books_equal_truth(r: Rig, timeout: float = 15.0) -> None:
    """Pause the flow, then wait until every Redis book equals the simulator's true book."""
    await assert_redis_equals_truth(r.sim, r.redis, r.tokens, timeout)
    assert not r.task.done(), "the feeder stopped"


async def assert_redis_equals_truth(
    sim: Simulator, redis: Client, tokens: list[str], timeout: float = 15.0
) -> None:
    """Pause the simulator's flow, then wait until Redis holds exactly its true books."""
    await sim.pause()
    last: list[str] = []

    async def converged() -> bool:
        nonlocal last
        last = await mismatches(sim, redis, tokens)
        return not last

    try:
        await wait_for(converged, timeout, "Redis books to equal the simulator's", interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still different: {last[:6]}") from None


async def statuses(r: Rig, token: str) -> list[str]:
    """The `state` of every status entry in a token's stream, in order."""
    entries = await r.redis.xrange(keys.stream(token))
    return [f["state"] for _, f in entries if f["type"] == "status"]

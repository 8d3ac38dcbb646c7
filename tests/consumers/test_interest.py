"""Dynamic interest: a consumer's lease makes the feeder carry a token, and expiry retires it."""

from __future__ import annotations

import asyncio
import contextlib

from polybus.consumers import MarketFeed
from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.simulator import SimConfig, Simulator
from tests.e2e.harness import FAST
from tests.support import wait_for


async def test_lease_subscribes_then_expiry_retires(redis_server) -> None:
    """subscribe() of an uncarried token: the feeder adds it live; after the lease, drops it."""
    sim = Simulator(SimConfig(markets=3, seed=9, rate=200.0))
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    tokens = sim.engine.tokens()
    config = FeederConfig(
        tokens=tuple(tokens[:2]),
        ws_url=sim.ws_url,
        redis_url=redis_server.url,
        feeder_id="lease",
        **{**FAST, "interest_interval": 0.2, "interest_grace": 0.5},
    )
    feeder = Feeder(config)
    task = asyncio.create_task(feeder.run())
    feed = MarketFeed(redis_server.url, lease_s=1.0, health_interval=0.2)
    try:
        wanted = tokens[4]
        assert wanted not in feeder.carried()
        await feed.connect()
        await feed.subscribe([wanted])
        await wait_for(lambda: wanted in feeder.carried(), 5, "the feeder to carry the lease")
        assert feeder.connections[0].stats.reconnects == 0, "added on the live socket"
        await wait_for(lambda: feed.get_order_book(wanted).status == "synced", 10, "its book")
        book = feed.get_order_book(wanted)
        assert book is not None and (book.bids or book.asks)
        await feed.disconnect()  # leases stop being renewed
        await wait_for(lambda: wanted not in feeder.carried(), 10, "the token to be retired")
        assert set(tokens[:2]) <= set(feeder.carried()), "configured tokens never retire"
    finally:
        feeder.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await sim.stop()

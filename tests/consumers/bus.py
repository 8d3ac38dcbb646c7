"""A hand-driven bus for consumer tests: the real Publisher (the feeder's Lua step) writing
chosen events for chosen tokens, plus a fake feeder health key, on a private redis-server."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.wire import keys
from polybus.wire.events import Book, Event, PriceChange, Status, Trade


T1 = "1001"
T2 = "2002"


class Bus:
    """Write entries exactly as the feeder would, one batch per call."""

    def __init__(self, redis: aioredis.Redis, epoch: int = 1) -> None:
        self.redis = redis
        self.publisher = Publisher(redis)
        self.epoch = epoch
        self.ts = 1_700_000_000_000

    async def write(self, *events: Event) -> None:
        batch = Batch()
        for event in events:
            batch.add(event, self.epoch, time.time_ns() // 1000)
        await self.publisher.write(batch)

    def stamp(self) -> str:
        self.ts += 1
        return str(self.ts)

    async def book(self, token: str, bid: str = "0.48", ask: str = "0.52") -> None:
        await self.write(
            Book(
                token,
                "0xm",
                self.stamp(),
                ((bid, "100"), ("0.4", "5")),
                ((ask, "200"),),
                "h" + self.stamp(),
                tick_size="0.01",
            )
        )

    async def change(self, token: str, price: str, size: str, side: str = "bid") -> None:
        await self.write(
            PriceChange(
                token,
                self.stamp(),
                side,
                price,
                size,  # type: ignore[arg-type]
                "",
                "",
                "h" + self.stamp(),
            )
        )

    async def trade(self, token: str, price: str = "0.5", size: str = "10") -> None:
        await self.write(Trade(token, self.stamp(), price, size, "BUY", "0", "0xtx"))

    async def status(self, token: str, state: str, reason: str = "test") -> None:
        await self.write(Status(token, state, reason))

    async def health(self, run: str, ttl_ms: int, feeder_id: str = "f1") -> None:
        """Write (or renew) a feeder health key for run `run` that expires after `ttl_ms`."""
        key = keys.feeder(feeder_id)
        await self.redis.hset(key, mapping={"state": "ok", "started": run})
        await self.redis.pexpire(key, ttl_ms)

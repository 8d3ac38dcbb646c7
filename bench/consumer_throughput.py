"""Consumer throughput: `python bench/consumer_throughput.py [--tokens 20] [--entries 100000]`.

Publishes price changes through the feeder's real Lua step into a private redis-server, then
times (1) the ceiling — a bare redis-py loop that XREADs the same streams and decodes every
entry with wire.codec.decode, doing nothing else — and (2) a MarketFeed applying them to its
books and firing on_price_change. Prints both rates and their ratio (MarketFeed / ceiling).
Not a test: numbers for the notes.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis.asyncio as aioredis
from benchkit import RedisServer, wait_for

from polybus.consumers import MarketFeed
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.wire import keys
from polybus.wire.codec import decode
from polybus.wire.events import Book, PriceChange


async def _publish(redis: aioredis.Redis, tokens: list[str], entries: int) -> None:
    publisher = Publisher(redis, maxlen=entries + 1000)
    batch = Batch()
    for t in tokens:
        batch.add(Book(t, "0xm", "1", (("0.4", "10"),), (("0.6", "10"),), "h"), 1, 1)
    await publisher.write(batch)
    per_token = entries // len(tokens)
    for start in range(0, per_token, 500):
        batch = Batch()
        for i in range(start, min(start + 500, per_token)):
            for t in tokens:
                price = f"0.{10 + i % 80}"
                batch.add(
                    PriceChange(t, "2", "bid", price, str(i + 1), "", "", "h"),
                    1,
                    time.time_ns() // 1000,
                )
        await publisher.write(batch)


async def _ceiling(redis: aioredis.Redis, tokens: list[str], total: int) -> float:
    cursors = {keys.stream(t): "0-0" for t in tokens}
    seen, began = 0, time.perf_counter()
    while seen < total:
        reply = await redis.xread(cursors, count=max(16, 2000 // len(tokens)))  # type: ignore[arg-type]
        for key, items in reply:
            token = keys.token_of(key)
            for entry_id, fields in items:
                decode(fields, token, entry_id)
                cursors[key] = entry_id
                seen += 1
    return seen / (time.perf_counter() - began)


async def _feed(url: str, tokens: list[str], total: int) -> float:
    feed = MarketFeed(url, cursor_interval=3600)
    count = 0

    def on_change(_: dict[str, object]) -> None:
        nonlocal count
        count += 1

    feed.on_price_change = on_change
    await feed.connect()
    # Follow from the start: reset each cursor to the stream's beginning after the load.
    began = time.perf_counter()
    await feed.subscribe(tokens)
    for book in feed._books.values():
        book.cursor, book.seq = "0-0", None
    changes = total - len(tokens)
    await wait_for(lambda: count >= changes, 600, "every change applied", interval=0.01)
    rate = feed.events / (time.perf_counter() - began)
    await feed.disconnect()
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    tokens = [str(1000 + i) for i in range(args.tokens)]
    server = RedisServer()
    server.start()
    redis = server.client()
    try:
        await _publish(redis, tokens, args.entries)
        total = sum([await redis.xlen(keys.stream(t)) for t in tokens])
        ceiling = await _ceiling(redis, tokens, total)
        feed = await _feed(server.url, tokens, total)
        print(f"{total} entries over {len(tokens)} tokens")
        print(f"ceiling (XREAD + decode only): {ceiling:,.0f} entries/s")
        print(f"MarketFeed (books + callbacks): {feed:,.0f} entries/s")
        print(f"ratio MarketFeed / ceiling: {feed / ceiling:.2f}")
    finally:
        await redis.aclose()
        server.close()


if __name__ == "__main__":
    asyncio.run(main())

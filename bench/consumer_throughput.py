"""Consumer throughput: `python bench/consumer_throughput.py [--tokens 20] [--entries 100000]`.

Publishes price changes through the feeder's real Lua step into a private redis-server, then,
round after round (`--rounds`, each on the same entries), times:

1. the floor — plain redis-py XREAD of the same streams from `0-0` to the end, nothing else
   (each reply's last id is the next cursor);
2. the decode ceiling — the same XREADs, every entry decoded with wire.codec.decode;
3. the XREADs as MarketFeed sends them: packed by hand, replies as the server sent them
   (RESP3 maps and flat field lists, not reshaped into redis-py's tuples and dicts), nothing
   else — the read MarketFeed's cost sits on, shown so the floor's ratio can be read fairly;
4. a MarketFeed following the tokens from `0-0`, applying every entry to its books and
   firing on_price_change (a counter).

All use the client MarketFeed opens (consumers.redisio.open_client: redis-py's asyncio
`Redis`, its hiredis parser, `decode_responses=True` with each XREAD asking `NEVER_DECODE`,
redis-py 8's default protocol — RESP3, its replies reshaped to the RESP2 form — unless
`--query protocol=2`) and its XREAD shape (`COUNT` = max(16, 2000 / streams), `BLOCK` 500),
so the comparison is of the same reads of the same entries. Prints each rate per wall second
and per CPU second of this process (steadier on a shared machine), the best of the rounds,
and ratios against the floor. `--profile FILE` writes a cProfile of one more MarketFeed
round. Not a test: numbers for the notes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import time
from typing import Any

from benchkit import RedisServer, wait_for

from polybus.consumers import MarketFeed
from polybus.consumers.redisio import XreadPacker, open_client, raw, send_packed
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.redisio import Client
from polybus.wire import keys
from polybus.wire.codec import decode
from polybus.wire.events import Book, PriceChange


COUNT, BLOCK_MS = 2000, 500
"""MarketFeed's defaults (Reader count, block_ms)."""


async def _publish(redis: Client, tokens: list[str], entries: int) -> None:
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


Rate = tuple[float, float]
"""(entries per wall second, entries per CPU second of this process)."""


async def _read_all(redis: Client, tokens: list[str], total: int, *, decoding: bool) -> Rate:
    """Entries/s of XREADing every stream from the start (decoding each entry, or not)."""
    cursors = {keys.stream(t): "0-0" for t in tokens}
    token_of = {key: t for key, t in zip(cursors, tokens, strict=True)}
    per_stream = max(16, COUNT // len(tokens))
    seen, began, cpu = 0, 0.0, 0.0
    while seen < total:
        reply: Any = await raw(
            redis,
            "XREAD",
            "COUNT",
            per_stream,
            "BLOCK",
            BLOCK_MS,
            "STREAMS",
            *cursors,
            *cursors.values(),
        )
        if not began:  # from the first reply in hand, as for the feed
            began, cpu = time.perf_counter(), time.process_time()
        for bkey, items in reply:
            key = bkey.decode()
            if decoding:
                token = token_of[key]
                for entry_id, fields in items:
                    decode(fields, token, entry_id)
            cursors[key] = items[-1][0].decode()
            seen += len(items)
    return seen / (time.perf_counter() - began), seen / (time.process_time() - cpu)


async def _read_as_sent(redis: Client, tokens: list[str], total: int) -> Rate:
    """Entries/s of the same XREADs as MarketFeed sends them (consumers.redisio: packed by
    hand, replies as the server sent them, not reshaped by redis-py), nothing else."""
    cursors = {keys.stream(t): "0-0" for t in tokens}
    streams, packer = tuple(cursors), XreadPacker()
    per_stream = max(16, COUNT // len(tokens))
    seen, began, cpu = 0, 0.0, 0.0
    while seen < total:
        packed = packer.pack(per_stream, BLOCK_MS, streams, list(cursors.values()))
        reply: Any = await send_packed(redis, packed)
        if not began:
            began, cpu = time.perf_counter(), time.process_time()
        for bkey, items in reply.items() if isinstance(reply, dict) else reply:
            cursors[bkey.decode()] = items[-1][0].decode()
            seen += len(items)
    return seen / (time.perf_counter() - began), seen / (time.process_time() - cpu)


async def _feed(url: str, tokens: list[str], total: int, profile: cProfile.Profile | None) -> Rate:
    feed = MarketFeed(url, cursor_interval=3600)
    count, began, cpu = 0, 0.0, 0.0

    def on_change(_: dict[str, object]) -> None:
        nonlocal count, began, cpu
        if not began:
            began, cpu = time.perf_counter(), time.process_time()
        count += 1

    feed.on_price_change = on_change
    await feed.connect()
    await feed.subscribe(tokens)
    # Follow from the start: reset each cursor to the stream's beginning. The loop may be
    # parked in a blocking XREAD of nothing new and picks the cursors up at its next fetch, so
    # the clock starts at the first callback (the floor's at its first reply).
    for book in feed._books.values():
        book.cursor, book.seq = "0-0", None
    if profile is not None:
        profile.enable()
    changes = total - len(tokens)
    await wait_for(lambda: count >= changes, 600, "every change applied", interval=0.002)
    rate = feed.events / (time.perf_counter() - began), feed.events / (time.process_time() - cpu)
    if profile is not None:
        profile.disable()
    await feed.disconnect()
    return rate


def _line(rates: dict[str, Rate]) -> str:
    floor = rates["floor"]
    parts = [
        f"{name} {wall:,.0f} / {cpu:,.0f} ({wall / floor[0]:.2f} / {cpu / floor[1]:.2f})"
        for name, (wall, cpu) in rates.items()
    ]
    return "  ".join(parts)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--query", default="", help="appended to the URL, e.g. protocol=2")
    parser.add_argument("--profile", default="", help="write a cProfile of MarketFeed here")
    args = parser.parse_args()
    tokens = [str(1000 + i) for i in range(args.tokens)]
    server = RedisServer()
    server.start()
    url = server.url + ("?" + args.query if args.query else "")
    redis = await open_client(url, socket_timeout=5.0)
    profile = cProfile.Profile() if args.profile else None
    try:
        await _publish(redis, tokens, args.entries)
        total = sum([await redis.xlen(keys.stream(t)) for t in tokens])
        print(f"{total} entries over {len(tokens)} tokens, {url}, load {os.getloadavg()[0]:.2f}")
        best: dict[str, Rate] = {}
        for r in range(args.rounds):
            rates = {
                "floor": await _read_all(redis, tokens, total, decoding=False),
                "ceiling": await _read_all(redis, tokens, total, decoding=True),
                "as-sent": await _read_as_sent(redis, tokens, total),
                "feed": await _feed(url, tokens, total, None),
            }
            print(f"round {r + 1}: " + _line(rates), flush=True)
            best = {
                k: (max(v[0], *best.get(k, v)[:1]), max(v[1], *best.get(k, v)[1:]))
                for k, v in rates.items()
            }
        print("best of each: " + _line(best))
        print("(entries/s per wall second / per CPU second of this process; ratios to the floor)")
        if profile is not None:  # a round of its own: the profiler slows what it watches
            await _feed(url, tokens, total, profile)
        if profile is not None:
            profile.dump_stats(args.profile)
    finally:
        await redis.aclose()
        server.close()


if __name__ == "__main__":
    asyncio.run(main())

"""Redis memory per token at the stream cap, and tokens per shard: `python bench/sizing.py`.

    python bench/sizing.py [--fill 3] [--maxlen 100000] [--tokens 45000] [--primaries 3]

A real feeder writes simulator traffic into a private redis-server until it has published
`--sample` entries: those are the realistic entries (the feeder's Lua step wrote them; their mix
of book snapshots, price changes, trades and statuses is the simulator's). Then `--fill` token
streams are filled to `--maxlen` (and to a tenth of it) by XADD of those entries in their order,
`seq` and `rx` counting on, with `MAXLEN ~` as the feeder trims; the same once with price
changes only (the bulk of a live market's entries). Prints the bytes per entry and per token
(`MEMORY USAGE … SAMPLES 0` of the stream plus a feeder-written book hash, and the `used_memory`
delta), and what that means for `--tokens` tokens on `--primaries` primaries. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import redis.asyncio as aioredis
from benchkit import RedisServer, feeder_on_simulator, renumbered, wait_for

from polybus.wire import keys


GB = 1 << 30


async def sample(server: RedisServer, markets: int, entries: int) -> tuple[list[Any], int]:
    """Entries the real feeder wrote (raw field maps, each token's in order) and the mean
    MEMORY USAGE of the book hashes it wrote."""
    async with feeder_on_simulator(server, markets=markets, seed=2) as pair:
        await wait_for(lambda: pair.feeder.published >= entries, 120, f"{entries} events")
        await pair.sim.pause()
    redis = aioredis.Redis(port=server.port)
    try:
        out: list[Any] = []
        books, levels = [], 0
        for token in pair.tokens:
            out += [fields for _, fields in await redis.xrange(keys.stream(token)) or []]
            books.append(int(await redis.memory_usage(keys.book(token), samples=0) or 0))
            levels += sum(k[:4] in (b"bid:", b"ask:") for k in await redis.hkeys(keys.book(token)))
        print(f"book hashes: {levels / len(books):.0f} levels each on average")
        await redis.flushall()
        return out, sum(books) // len(books)
    finally:
        await redis.aclose()


async def fill(redis: aioredis.Redis, key: str, entries: list[Any], maxlen: int) -> int:
    """XADD `entries` cyclically until the stream is at its cap; its MEMORY USAGE."""
    pipe = redis.pipeline(transaction=False)
    for i, fields in enumerate(renumbered(entries, maxlen + maxlen // 50), 1):
        pipe.xadd(key, fields, maxlen=maxlen, approximate=True)
        if i % 1000 == 0:
            await pipe.execute()
    await pipe.execute()
    return int(await redis.memory_usage(key, samples=0) or 0)


async def measure(
    redis: aioredis.Redis, name: str, entries: list[Any], count: int, maxlen: int
) -> tuple[float, float]:
    """(MEMORY USAGE bytes per entry, bytes per stream: the larger of MEMORY USAGE and the
    used_memory delta) over `count` streams."""
    used0 = int((await redis.info("memory"))["used_memory"])
    usage = [await fill(redis, f"sizing:{name}:{{{i}}}", entries, maxlen) for i in range(count)]
    used = int((await redis.info("memory"))["used_memory"]) - used0
    lengths = [await redis.xlen(f"sizing:{name}:{{{i}}}") for i in range(count)]
    per_entry = sum(usage) / sum(lengths)
    print(
        f"{name:>13} MAXLEN ~ {maxlen:>7,}: {sum(lengths) // count:,} entries/stream, "
        f"{per_entry:.0f} B/entry, {sum(usage) / count / 1e6:.2f} MB/stream (MEMORY USAGE), "
        f"{used / count / 1e6:.2f} MB/stream (used_memory delta)"
    )
    await redis.flushall()
    return per_entry, max(used, sum(usage)) / count


def advise(args: argparse.Namespace, per_token: dict[int, float]) -> None:
    """Memory per primary for the given token count, tokens per shard of given sizes, and the
    primaries the token count needs (every stream at its cap: a quiet token's stream is not
    trimmed by age, it only fills more slowly)."""
    each = args.tokens / args.primaries
    print(f"\n{args.tokens:,} tokens on {args.primaries} primaries = {each:,.0f} per primary:")
    for maxlen, size in sorted(per_token.items(), reverse=True):
        fits = {gb: int(gb * GB * USABLE / size) for gb in (16, 32, 64)}
        print(
            f"  MAXLEN {maxlen:>7,}: {size / 1e6:6.2f} MB per token at the cap -> "
            f"{each * size / GB:6.1f} GiB per primary; tokens per primary at "
            f"maxmemory {USABLE:.0%} of RAM: "
            + ", ".join(f"{n:,} ({gb} GB)" for gb, n in fits.items())
            + f"; {args.tokens:,} tokens need {-(-args.tokens // fits[64]):,} primaries of 64 GB"
        )


USABLE = 0.75
"""maxmemory as a share of a node's RAM: the rest is fragmentation, client and replication
buffers (no fork: the nodes run without persistence)."""


async def run(args: argparse.Namespace) -> None:
    server = RedisServer()
    server.start()
    try:
        entries, book = await sample(server, args.markets, args.sample)
        kinds: dict[bytes, int] = {}
        for fields in entries:
            kinds[fields[b"type"]] = kinds.get(fields[b"type"], 0) + 1
        mix = ", ".join(f"{k.decode()} {v / len(entries):.0%}" for k, v in kinds.items())
        print(f"sample: {len(entries):,} feeder-written entries ({mix}); book hash {book:,} B")
        changes = [f for f in entries if f[b"type"] == b"price_change"]
        redis = aioredis.Redis(port=server.port)
        per_token = {}
        try:
            for maxlen in (args.maxlen, args.maxlen // 10):
                _, stream = await measure(redis, "feeder mix", entries, args.fill, maxlen)
                per_token[maxlen] = stream + book
            await measure(redis, "price_change", changes, 1, args.maxlen)
        finally:
            await redis.aclose()
        advise(args, per_token)
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fill", type=int, default=3, help="streams filled per cap")
    parser.add_argument("--maxlen", type=int, default=100_000, help="the feeder's default")
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=45_000)
    parser.add_argument("--primaries", type=int, default=3)
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

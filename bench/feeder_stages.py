"""Where one feeder's CPU goes, stage by stage: `python bench/feeder_stages.py [--frames 50000]`.

The feeder is one Python process; its ceiling is 1 / (CPU per event). This times each stage of
its hot path alone, in this process, on the same frames (live-shaped `price_change` frames,
two changes each: a YES leg and its NO mirror, as the exchange sends them):

- socket: receiving the frames over a local WebSocket (`websockets`, as the feeder does) from a
  server in another process, doing nothing with them: the floor of any Python reader;
- normalize: `Normalizer.feed` (orjson parse, validation, canonical numbers, events);
- mirror: `Mirror.apply` (the feeder's own book: tops and the causal check);
- queue: `Batch.add` (the entry's items);
- publish: `Publisher.write` into a private redis-server in batches of `--batch` events:
  this process's CPU (packing, replies) and redis-server's (the Lua step), from /proc.

Prints µs per event for each and the events/s one core would reach with all of them. Not a
test.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from benchkit import RedisServer, cpu_seconds, tokens_of

from polybus.feeder.mirror import Mirror
from polybus.feeder.normalize import Normalizer
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.redisio import packing_in_c
from polybus.redisproc import free_port
from polybus.wire.events import Book, Event


MARKET = "0x" + "5f" * 32

SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
frames = [line.rstrip(b"\\n") for line in sys.stdin.buffer]
async def handler(ws):
    for f in frames:
        await ws.send(f.decode())
    await ws.close()
async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1])):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


def frames(tokens: list[str], n: int) -> list[str]:
    """`n` price_change frames over YES/NO pairs of `tokens`, sizes and prices moving."""
    out = []
    for i in range(n):
        yes, no = tokens[(2 * i) % len(tokens)], tokens[(2 * i + 1) % len(tokens)]
        p = 30 + i % 20
        legs = [
            (yes, f"0.{p}", "BUY", "0.49", "0.51"),
            (no, f"0.{100 - p}", "SELL", "0.49", "0.51"),
        ]
        changes = [
            {"asset_id": t, "price": price, "size": str(100 + i % 977), "side": side,
             "hash": f"{i:040x}", "best_bid": bid, "best_ask": ask}
            for t, price, side, bid, ask in legs
        ]  # fmt: skip
        frame = {"market": MARKET, "price_changes": changes,
                 "timestamp": str(1_790_000_000_000 + i), "event_type": "price_change"}  # fmt: skip
        out.append(orjson.dumps(frame).decode())
    return out


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    """CPU seconds of this process for `work()`, and its result."""
    began = time.process_time()
    result = work()
    return time.process_time() - began, result


async def socket_floor(texts: list[str]) -> float:
    """CPU seconds this process spends receiving `texts` over a local WebSocket."""
    from websockets.asyncio.client import connect

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write("\n".join(texts).encode() + b"\n")
        server.stdin.close()
        server.stdout.readline()
        began, got = time.process_time(), 0
        async with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
            async for _ in ws:
                got += 1
        assert got == len(texts), f"received {got} of {len(texts)} frames"
        return time.process_time() - began
    finally:
        server.kill()
        server.wait()


async def publish(events: list[Event], batch: int) -> tuple[float, float]:
    """(this process's, redis-server's) CPU seconds writing `events` in batches of `batch`."""
    server = RedisServer()
    server.start()
    assert server.proc is not None
    client = packing_in_c(aioredis.Redis.from_url(server.url))  # as the feeder's
    try:
        publisher = Publisher(client, maxlen=100_000)
        await publisher.load()
        first = Batch()
        for token in sorted({e.asset_id for e in events}):
            first.add(Book(token, MARKET, "1", (("0.49", "10"),), (("0.51", "10"),), "h"), 1, 1)
        await publisher.write(first)
        batches = []  # made beforehand: Batch.add is the queue stage, timed apart
        for start in range(0, len(events), batch):
            b = Batch()
            for event in events[start : start + batch]:
                b.add(event, 1, 1)
            batches.append(b)
        mine, theirs = time.process_time(), cpu_seconds(server.proc.pid)
        for b in batches:
            await publisher.write(b)
        return time.process_time() - mine, cpu_seconds(server.proc.pid) - theirs
    finally:
        await client.aclose()
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--batch", type=int, default=2_000, help="events per write")
    args = parser.parse_args()
    tokens = tokens_of(args.tokens)
    texts = frames(tokens, args.frames)
    socket_s = asyncio.run(socket_floor(texts))
    norm = Normalizer(tokens)
    normalize_s, outs = timed(lambda: [norm.feed(t, 1).events for t in texts])
    events = [e for out in outs for e in out]
    n = len(events)
    assert n == 2 * args.frames, f"normalized {n} events of {2 * args.frames}"
    mirror = Mirror()
    mirror.apply(
        [Book(t, MARKET, "1", (("0.49", "10"),), (("0.51", "10"),), "h") for t in tokens], 0.0
    )
    mirror_s, _ = timed(lambda: [mirror.apply(out, 0.0) for out in outs])
    batch = Batch()
    queue_s, _ = timed(lambda: [batch.add(e, 1, 1) for e in events])
    client_s, redis_s = asyncio.run(publish(events, args.batch))
    stages = {
        "socket (websockets receive)": socket_s,
        "normalize": normalize_s,
        "mirror": mirror_s,
        "queue (Batch.add)": queue_s,
        f"publish, client (batches of {args.batch:,})": client_s,
    }
    total = sum(stages.values())
    print(f"{args.frames:,} frames, {n:,} events, {args.tokens} tokens")
    for name, seconds in stages.items():
        print(f"  {name:<40} {1e6 * seconds / n:6.2f} us/event  {seconds / total:5.1%}")
    print(f"  {'feeder process, all stages':<40} {1e6 * total / n:6.2f} us/event"
          f" -> {n / total:,.0f} events/s on one core")  # fmt: skip
    print(f"  {'redis-server (the Lua step)':<40} {1e6 * redis_s / n:6.2f} us/event"
          f" -> {n / redis_s:,.0f} events/s on one core")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

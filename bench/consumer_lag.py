"""Consumer lag at many tokens, single Redis beside a Redis Cluster, measured in one run.

    python bench/consumer_lag.py [--tokens 2000] [--rate 5000] [--seconds 10] [--consumers 1]
                                 [--share] [--bus single|cluster|both] [--direct]

For each bus (a private redis-server, then a private 3-primary/3-replica cluster): this process
writes price changes over `--tokens` tokens at `--rate` events/s through the feeder's own
publisher (the Lua step, and on a cluster the `P:moved:{pN}` notices), each event's `hash`
holding its send time; `--consumers` MarketFeed processes follow every token (with
`--share`, consumer c of k follows every k-th token from the c-th: a tenth each for ten)
and note, per `on_price_change`, now − send time. Prints delivered share, p50/p99/p99.9/max
lag, each process's CPU, and on the cluster the notices and sweeps the consumers used. Lag here is
send → callback: the publisher's batch and round trip, Redis, the consumer's read, decode and
apply; "from XADD" is the consumer's part: callback time − the entry id's time (Redis's clock
when the Lua step ran, whole ms: up to 1 ms more).
`LAG_PROFILE=1` makes each consumer write a cProfile of its run beside its report (the
path is printed). `--direct` (single server) writes the same entries with plain XADDs and
an HSET of `seq` instead of the Lua step, when the Lua step cannot offer the rate here.
Not a test: figures for the notes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from benchkit import cpu_seconds, tokens_of, until_synced

from polybus.consumers import MarketFeed
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import Publisher
from polybus.redisio import Client, connect, on_cluster
from polybus.redisproc import LocalCluster, RedisServer
from polybus.wire import keys
from polybus.wire.events import Book, PriceChange


PARTITIONS = 16
TICK_S = 0.005
"""The publisher writes one batch per tick (a feeder's batches are of that order)."""


# --- the consumer process -------------------------------------------------------------------
async def consume(url: str, n: int, out: str, share: int, shares: int) -> None:
    """Follow share `share` of `shares` of `n` tokens; on `stop` (stdin) write the lags (ms)
    and the feed's counters."""
    tokens = tokens_of(n)[share::shares]
    feed = MarketFeed(url, name=f"lag{os.getpid()}")
    lags: list[float] = []
    stored: list[float] = []
    books = feed._books

    def on_change(d: dict[str, Any]) -> None:
        now = time.time_ns()
        lags.append((now - int(d["hash"])) / 1e6)
        # the entry's id is Redis's clock (ms) when the Lua step ran: XADD -> callback
        stored.append(now / 1e6 - int(books[d["asset_id"]].cursor.partition("-")[0]))

    feed.on_price_change = on_change
    assert await feed.connect()
    await feed.subscribe(tokens)
    await until_synced(feed, tokens)
    print("ready", flush=True)
    profile = cProfile.Profile() if os.environ.get("LAG_PROFILE") else None
    if profile is not None:  # LAG_PROFILE=1: each consumer's run profiled, into OUT.prof
        profile.enable()
    await asyncio.to_thread(sys.stdin.readline)
    if profile is not None:
        profile.disable()
        profile.dump_stats(out + ".prof")
    moved = feed._reader.moved
    report = {"lags": lags, "stored": stored, "notices": moved.notices, "sweeps": moved.sweeps}
    Path(out).write_bytes(orjson.dumps(report))
    await feed.disconnect()


# --- the publishing side --------------------------------------------------------------------
async def publish(redis: Client, tokens: list[str], rate: float, seconds: float) -> int:
    """Price changes round-robin over the tokens at `rate`/s; how many were written."""
    pub = Publisher(redis, partitions=PARTITIONS)
    per_tick, sent, i = max(1, round(rate * TICK_S)), 0, 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (now := loop.time()) < start + seconds:
        due = int((now - start) * rate) - sent
        batch = Batch()
        for _ in range(min(due, 20 * per_tick)):
            token = tokens[i % len(tokens)]
            size = str(1 + i % 997)
            stamp = str(time.time_ns())
            batch.add(PriceChange(token, "2", "bid", "0.40", size, "", "", stamp), 1, 1)
            i += 1
        if batch.size:
            await pub.write(batch)
            sent += batch.size
        await asyncio.sleep(TICK_S)
    return sent


def _resp(*args: str) -> bytes:
    """One command in the protocol's bytes (packed here: redis-py's packing, per argument in
    Python, would make the load generator the bottleneck)."""
    out = [f"*{len(args)}\r\n"]
    for arg in args:
        out.append(f"${len(arg.encode())}\r\n{arg}\r\n")
    return "".join(out).encode()


def _bulk(value: int) -> bytes:
    text = b"%d" % value
    return b"$%d\r\n%s\r\n" % (len(text), text)


_EPOCH_TS_RX = _resp("epoch", "1", "ts", "", "rx")[4:]
_V_TO_SIZE = _resp("v", "1", "side", "bid", "price", "0.40", "size")[4:]
_TOPS_HASH = _resp("best_bid", "", "best_ask", "", "hash")[4:]


async def publish_direct(redis: Client, tokens: list[str], rate: float, seconds: float) -> int:
    """As `publish`, but each batch is one MULTI of plain XADDs (the entries the Lua step
    would write, fields in its order) and an HSET of each token's `seq` (what the consumers'
    audit reads), packed by hand: a load generator cheap enough to offer rates the Lua step
    cannot reach on this machine. One server only."""
    assert not on_cluster(redis)
    seqs = dict.fromkeys(tokens, 1)  # seed() wrote seq 1
    per_tick, sent, i = max(1, round(rate * TICK_S)), 0, 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    heads = {
        t: (
            _resp("XADD", keys.stream(t), "MAXLEN", "~", "10000", "*").replace(b"*6", b"*30", 1)
            + _resp("type", "price_change", "seq")[4:],
            _resp("HSET", keys.book(t), "seq", "x")[:-7],
        )
        for t in tokens
    }
    conn: Any = await redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    while (now := loop.time()) < start + seconds:
        due = min(int((now - start) * rate) - sent, 20 * per_tick)
        if due > 0:
            parts = [_resp("MULTI")]
            for _ in range(due):
                token = tokens[i % len(tokens)]
                seq = seqs[token] = seqs[token] + 1
                stamp = time.time_ns()
                xadd, hset = heads[token]
                parts += (xadd, _bulk(seq), _EPOCH_TS_RX, _bulk(stamp // 1000), _V_TO_SIZE)
                parts += (_bulk(1 + i % 997), _TOPS_HASH, _bulk(stamp), hset, _bulk(seq))
                i += 1
            parts.append(_resp("EXEC"))
            await conn.send_packed_command(b"".join(parts))
            for _ in range(2 * due + 2):  # OK, QUEUED…, the EXEC's replies
                await conn.read_response()
            sent += due
        await asyncio.sleep(TICK_S)
    await redis.connection_pool.release(conn)
    return sent


async def seed(redis: Client, tokens: list[str]) -> None:
    """A book per token, and the partition count the notices are keyed by."""
    await redis.set(keys.partitions(), str(PARTITIONS))
    pub = Publisher(redis, partitions=PARTITIONS)
    for start in range(0, len(tokens), 500):
        batch = Batch()
        for t in tokens[start : start + 500]:
            batch.add(Book(t, "0xm", "1", (("0.40", "10"),), (("0.60", "10"),), "h"), 1, 1)
        await pub.write(batch)


async def run_one(
    url: str, args: argparse.Namespace, tmp: Path, pids: dict[str, int]
) -> dict[str, Any]:
    tokens = tokens_of(args.tokens)
    redis = await connect(url, decode_responses=True)
    await seed(redis, tokens)
    procs = []
    for c in range(args.consumers):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--consume",
                url,
                str(args.tokens),
                str(tmp / f"c{c}.json"),
                str(c if args.share else 0),
                str(args.consumers if args.share else 1),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert line.strip() == b"ready", line
    watched = {
        **pids,
        **{f"consumer{i}": p.pid for i, p in enumerate(procs)},
        "publisher": os.getpid(),
    }
    before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    began = time.monotonic()
    write = publish_direct if args.direct else publish
    sent = await write(redis, tokens, args.rate, args.seconds)
    await asyncio.sleep(1.0)  # 100% within 1 s of the end is what is asked
    wall = time.monotonic() - began
    cpu = {name: (cpu_seconds(pid) - before[name]) / wall for name, pid in watched.items()}
    reports = []
    for c, proc in enumerate(procs):
        assert proc.stdin is not None
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 30)
        reports.append(orjson.loads((tmp / f"c{c}.json").read_bytes()))
        if os.environ.get("LAG_PROFILE"):
            print(f"profile: {tmp / f'c{c}.json.prof'}")
    await redis.aclose()
    return {"sent": sent, "reports": reports, "cpu": cpu}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def show(name: str, result: dict[str, Any], args: argparse.Namespace) -> None:
    for i, rep in enumerate(result["reports"]):
        lags = rep["lags"]
        shares = args.consumers if args.share else 1
        sent = owed(result["sent"], args.tokens, i % shares, shares)
        share = 100 * len(lags) / max(1, sent)
        print(
            f"{name:8} consumer{i}: delivered {len(lags)}/{sent} ({share:.1f}%)"
            f"  p50 {pct(lags, 0.5):.2f} ms  p99 {pct(lags, 0.99):.2f} ms"
            f"  p99.9 {pct(lags, 0.999):.2f} ms  max {max(lags, default=float('nan')):.2f} ms"
            f"  notices {rep['notices']}  sweeps {rep['sweeps']}"
        )
        stored = rep["stored"]
        print(
            f"{'':8} consumer{i}: from XADD (entry id, ms clock): p50 {pct(stored, 0.5):.1f} ms"
            f"  p99 {pct(stored, 0.99):.1f} ms  max {max(stored, default=float('nan')):.1f} ms"
        )
    achieved = result["sent"] / args.seconds
    print(f"{name:8} published {result['sent']} ({achieved:,.0f}/s of {args.rate:,.0f}/s offered)")
    cpu = "  ".join(f"{k} {v:.2f}" for k, v in result["cpu"].items())
    print(f"{name:8} cores busy: {cpu}")


def owed(sent: int, tokens: int, share: int, shares: int) -> int:
    """How many of the `sent` events (round-robin over the tokens) share `share` follows."""
    per_round = sum(1 for t in range(tokens) if t % shares == share)
    rounds, rest = divmod(sent, tokens)
    return rounds * per_round + sum(1 for t in range(rest) if t % shares == share)


def redis_pids(server: RedisServer | LocalCluster) -> dict[str, int]:
    nodes = server.nodes if isinstance(server, LocalCluster) else [server]
    return {f"redis:{n.port}": n.proc.pid for n in nodes if n.proc is not None}


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="polybus-lag-"))
    print(
        f"{args.tokens} tokens, {args.rate:.0f} events/s offered for {args.seconds:.0f} s, "
        f"{args.consumers} consumer process(es) following "
        f"{'a share' if args.share else 'every token'} each, "
        f"one batch per {TICK_S * 1000:.0f} ms, load {os.getloadavg()[0]:.2f}"
    )
    buses: list[tuple[str, RedisServer | LocalCluster]] = [
        ("single", RedisServer()),
        ("cluster", LocalCluster()),
    ]
    for name, bus in buses:  # one after the other: each gets the machine to itself
        if args.bus not in ("both", name):
            continue
        bus.start()
        try:
            show(name, await run_one(bus.url, args, tmp, redis_pids(bus)), args)
        finally:
            bus.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--consume":
        argv = sys.argv
        asyncio.run(consume(argv[2], int(argv[3]), argv[4], int(argv[5]), int(argv[6])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--share", action="store_true", help="each consumer follows a share")
    parser.add_argument("--bus", choices=("single", "cluster", "both"), default="both")
    parser.add_argument(
        "--direct", action="store_true", help="plain XADD+HSET, not the Lua step (single)"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))

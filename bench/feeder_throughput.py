"""Feeder throughput: simulator → feeder → Redis, beside redis-benchmark measured in the same run.

    python bench/feeder_throughput.py [--seconds 15] [--markets 50] [--hog] [--cluster]

Starts a private redis-server, measures `redis-benchmark` XADD (pipelined, and one round trip
per command) against it, then runs `polybus simulate --rate 0` (as fast as it can) in its own
process and the feeder in this one, and counts frames and events the feeder takes in and
publishes over a window. With `--cluster` it then does the same against a local Redis Cluster
(3 primaries, 3 replicas, polybus.redisproc.LocalCluster): XADD on each primary alone and on
all at once (`redis-benchmark --cluster`), and the same simulator load through the feeder.
Prints each figure, the ratios to the XADD limits and between the two Redis set-ups, and the
CPU each process used (what limits the run: on a 2-core machine six redis-servers, the feeder
and the simulator contend). With `--hog` the single-server run is repeated beside a CPU hog
(a busy loop, one core's worth) and the feeder's events per CPU-second of its own are compared:
a feeder that gets less than a core must not spend more per event (it falls behind exactly
then). For a profile of the feeder in such a run: `py-spy record -o feeder.svg -- python
bench/feeder_throughput.py --hog` (the feeder runs in this process). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
from benchkit import cpu_seconds

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.redisproc import LocalCluster, RedisServer, free_port


ROOT = Path(__file__).resolve().parents[1]
XADD = [
    "MAXLEN",
    "~",
    "100000",
    "*",
    "type",
    "price_change",
    "seq",
    "1",
    "price",
    "0.48",
    "size",
    "150",
]


def redis_benchmark(
    port: int, pipeline: int, n: int, *, key: str = "bench:xadd", cluster: bool = False
) -> float:
    """XADD requests/s from redis-benchmark with the given pipeline depth. With `cluster`, the
    key's `{tag}` is replaced by one per primary and the clients are spread over them."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return float("nan")
    mode = ["--cluster", "-c", "6"] if cluster else ["-c", "4"]
    out = subprocess.run(
        [
            binary,
            "-p",
            str(port),
            *mode,
            "-n",
            str(n),
            "-P",
            str(pipeline),
            "-q",
            "XADD",
            key,
            *XADD,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rates = re.findall(r"([\d.]+) requests per second", out)
    return float(rates[-1]) if rates else float("nan")


def simulator(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    """`polybus simulate --rate 0` in its own process: (process, ws url, tokens)."""
    ws_port, http_port = free_port(), free_port()
    sim = subprocess.Popen(
        [
            *(sys.executable, "-m", "polybus", "simulate", "--port", str(ws_port)),
            *("--http-port", str(http_port), "--markets", str(args.markets)),
            *("--rate", "0", "--seed", "3"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert sim.stdout is not None
    sim.stdout.readline()  # simulator.ready …
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/_sim/tokens") as r:
        tokens = orjson.loads(r.read())
    return sim, f"ws://127.0.0.1:{ws_port}/ws/market", tokens


async def measure(
    args: argparse.Namespace, redis_url: str, pids: dict[str, int]
) -> dict[str, float]:
    """The feeder's rates over the window, and cores busy per process (`pids` name Redis's)."""
    sim, ws_url, tokens = simulator(args)
    try:
        config = FeederConfig(
            tokens=tuple(tokens),
            ws_url=ws_url,
            redis_url=redis_url,
            feeder_id="bench",
            stats_interval=3600.0,
            stream_maxlen=10_000,
        )
        feeder = Feeder(config)
        task = asyncio.create_task(feeder.run())
        await asyncio.sleep(args.warmup)
        procs = {"feeder": os.getpid(), "simulator": sim.pid, **pids}
        frames0 = sum(c.stats.frames for c in feeder.connections)
        pub0, t0 = feeder.published, time.perf_counter()
        cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
        await asyncio.sleep(args.seconds)
        elapsed = time.perf_counter() - t0
        cpu = {k: (cpu_seconds(procs[k]) - v) / elapsed for k, v in cpu0.items()}
        frames = sum(c.stats.frames for c in feeder.connections) - frames0
        result = {
            "frames_per_s": frames / elapsed,
            "events_per_s": (feeder.published - pub0) / elapsed,
            "queue": float(len(feeder.outbox)),
            "batch_ms": 1000 * feeder.batch_seconds / max(feeder.batches, 1),
            **{f"cpu_{k}": v for k, v in cpu.items()},
        }
        feeder.stop()
        await task
        return result
    finally:
        sim.terminate()
        sim.wait(10)


def report(name: str, r: dict[str, float], limit: float) -> None:
    print(
        f"{name}: feeder {r['frames_per_s']:,.0f} frames/s, {r['events_per_s']:,.0f} events/s "
        f"published ({r['events_per_s'] / limit:.2f}x pipelined XADD); mean batch "
        f"{r['batch_ms']:.2f} ms; queue at end {r['queue']:.0f}"
    )
    busy = {k[4:]: v for k, v in r.items() if k.startswith("cpu_")}
    print(
        f"  cpu (cores busy, {sum(busy.values()):.2f} in all): "
        + ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
    )


def single(args: argparse.Namespace) -> tuple[dict[str, float], float]:
    """The single redis-server: XADD limits, then the feeder."""
    server = RedisServer()
    server.start()
    try:
        pipelined = redis_benchmark(server.port, 64, args.requests)
        one = redis_benchmark(server.port, 1, args.requests // 10)
        print(
            f"single: redis-benchmark XADD pipelined(-P 64): {pipelined:,.0f}/s   "
            f"one round trip each: {one:,.0f}/s"
        )
        with server.sync_client() as r:
            r.flushall()
        assert server.proc is not None
        r_ = asyncio.run(measure(args, server.url, {"redis": server.proc.pid}))
    finally:
        server.close()
    report("single", r_, pipelined)
    if args.hog:
        hogged(args, r_, pipelined)
    return r_, pipelined


def hogged(args: argparse.Namespace, quiet: dict[str, float], limit: float) -> None:
    """The single-server run again beside a busy loop; events per feeder CPU-second compared."""
    server = RedisServer()
    server.start()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert server.proc is not None
        r = asyncio.run(measure(args, server.url, {"redis": server.proc.pid, "hog": hog.pid}))
    finally:
        hog.kill()
        hog.wait()
        server.close()
    report("single beside a CPU hog", r, limit)
    per_core = {
        name: x["events_per_s"] / max(x["cpu_feeder"], 1e-9)
        for name, x in (("quiet", quiet), ("hog", r))
    }
    print(
        f"events per feeder CPU-second: quiet {per_core['quiet']:,.0f} "
        f"({1e6 / per_core['quiet']:.1f} us/event), beside the hog {per_core['hog']:,.0f} "
        f"({1e6 / per_core['hog']:.1f} us/event): {per_core['hog'] / per_core['quiet']:.2f}x"
    )


def tag_on(cluster: LocalCluster, node: RedisServer) -> str:
    """A key whose slot `node` serves."""
    return next(k for i in range(10_000) if cluster.node_for(k := f"bench:{{{i}}}") is node)


def on_cluster(args: argparse.Namespace) -> tuple[dict[str, float], float]:
    """The 3+3 cluster: XADD limit per primary alone and on all at once, then the feeder."""
    cluster = LocalCluster()
    cluster.start()
    try:
        primaries = cluster.primaries()
        each = [
            redis_benchmark(p.port, 64, args.requests, key=tag_on(cluster, p)) for p in primaries
        ]
        together = redis_benchmark(
            primaries[0].port, 64, args.requests, key="bench:{tag}", cluster=True
        )
        print(
            "cluster: redis-benchmark XADD pipelined(-P 64) on each primary alone: "
            + ", ".join(f"{r:,.0f}/s" for r in each)
            + f"   on all three at once (--cluster): {together:,.0f}/s"
        )
        cluster.flush()
        pids = {}
        for node in cluster.nodes:
            assert node.proc is not None
            role = "primary" if node in primaries else "replica"
            pids[f"{role}:{node.port}"] = node.proc.pid
        r = asyncio.run(measure(args, cluster.url, pids))
    finally:
        cluster.close()
    report("cluster 3+3", r, together)
    return r, together


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--markets", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--cluster", action="store_true", help="also a 3+3 local cluster")
    parser.add_argument("--hog", action="store_true", help="also beside a CPU hog")
    args = parser.parse_args()
    one, one_limit = single(args)
    if not args.cluster:
        return 0
    many, many_limit = on_cluster(args)
    print(
        f"cluster / single: feeder events/s {many['events_per_s'] / one['events_per_s']:.2f}x, "
        f"pipelined XADD limit {many_limit / one_limit:.2f}x, mean batch "
        f"{many['batch_ms'] / one['batch_ms']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

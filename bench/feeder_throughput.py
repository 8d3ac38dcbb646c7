"""Feeder throughput: simulator → feeder → Redis, beside redis-benchmark measured in the same run.

    python bench/feeder_throughput.py [--seconds 15] [--markets 50]

Starts a private redis-server, measures `redis-benchmark` XADD (pipelined, and one round trip
per command) against it, then runs `polybus simulate --rate 0` (as fast as it can) in its own
process and the feeder in this one, and counts frames and events the feeder takes in and
publishes over a window. Prints each figure, the ratios to the XADD limits, and the CPU each
process used (what limits the run). Not a test.
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

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.redisproc import private_redis


ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_benchmark(port: int, pipeline: int, n: int) -> float:
    """XADD requests/s from redis-benchmark with the given pipeline depth."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return float("nan")
    out = subprocess.run(
        [
            binary,
            "-p",
            str(port),
            "-n",
            str(n),
            "-P",
            str(pipeline),
            "-c",
            "4",
            "-q",
            "XADD",
            "bench:xadd",
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
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rates = re.findall(r"([\d.]+) requests per second", out)
    return float(rates[-1]) if rates else float("nan")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(
    args: argparse.Namespace, redis_url: str, redis_pid: int | None
) -> dict[str, float]:
    ws_port, http_port = free_port(), free_port()
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polybus",
            "simulate",
            "--port",
            str(ws_port),
            "--http-port",
            str(http_port),
            "--markets",
            str(args.markets),
            "--rate",
            "0",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # simulator.ready …
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/_sim/tokens") as r:
            tokens = orjson.loads(r.read())
        config = FeederConfig(
            tokens=tuple(tokens),
            ws_url=f"ws://127.0.0.1:{ws_port}/ws/market",
            redis_url=redis_url,
            feeder_id="bench",
            stats_interval=3600.0,
            stream_maxlen=10_000,
        )
        feeder = Feeder(config)
        task = asyncio.create_task(feeder.run())
        await asyncio.sleep(args.warmup)
        frames0 = sum(c.stats.frames for c in feeder.connections)
        pub0, t0 = feeder.published, time.perf_counter()
        cpu0 = {"feeder": cpu_seconds(os.getpid()), "simulator": cpu_seconds(sim.pid)}
        if redis_pid:
            cpu0["redis"] = cpu_seconds(redis_pid)
        await asyncio.sleep(args.seconds)
        elapsed = time.perf_counter() - t0
        frames = sum(c.stats.frames for c in feeder.connections) - frames0
        published = feeder.published - pub0
        cpu = {
            k: (
                cpu_seconds(
                    {"feeder": os.getpid(), "simulator": sim.pid, "redis": redis_pid or 0}[k]
                )
                - v
            )
            / elapsed
            for k, v in cpu0.items()
        }
        batches = max(feeder.batches, 1)
        result = {
            "frames_per_s": frames / elapsed,
            "events_per_s": published / elapsed,
            "queue": float(len(feeder.outbox)),
            "batch_ms": 1000 * feeder.batch_seconds / batches,
            **{f"cpu_{k}": v for k, v in cpu.items()},
        }
        feeder.stop()
        await task
        return result
    finally:
        sim.terminate()
        sim.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--markets", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300_000)
    args = parser.parse_args()
    redis = private_redis()
    try:
        port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
        pipelined = redis_benchmark(port, 64, args.requests)
        single = redis_benchmark(port, 1, args.requests // 10)
        print(
            f"redis-benchmark XADD pipelined(-P 64): {pipelined:,.0f}/s   "
            f"one round trip each: {single:,.0f}/s"
        )
        pid = redis.proc.pid if redis.proc is not None else None
        r = asyncio.run(measure(args, redis.url, pid))
    finally:
        redis.stop()
    print(
        f"feeder: {r['frames_per_s']:,.0f} frames/s, {r['events_per_s']:,.0f} events/s "
        f"published ({r['events_per_s'] / pipelined:.2f}x pipelined XADD, "
        f"{r['events_per_s'] / single:.1f}x round-trip XADD); mean batch {r['batch_ms']:.2f} ms; "
        f"queue at end {r['queue']:.0f}"
    )
    print(
        "cpu (cores busy): "
        + ", ".join(f"{k[4:]} {v:.2f}" for k, v in r.items() if k.startswith("cpu_"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

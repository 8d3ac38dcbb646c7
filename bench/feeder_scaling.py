"""Feeder scaling: N partitioned `polybus feed` processes on one redis-server.

    python bench/feeder_scaling.py [--feeders 1,2] [--seconds 15] [--markets 50]

One feeder process is bound by Python's one core (bench/feeder_throughput.py profiles it). The
redundant feeders' partitions (docs/ha.md) split the work: with `POLYBUS_REPLICAS=1` each of N
feeders carries only its share of the partitions, so its sockets, normalizer and mirror see only
those tokens. For each N this starts a private redis-server, `polybus simulate --rate 0` (as fast
as it can) and N `polybus feed` processes given every token, waits until every book is synced,
then counts the events written over a window from the book hashes' `seq` (contiguous per token,
assigned by the Lua step, so it counts what reached Redis whoever wrote it). Prints events/s in
all, per feeder process and per feeder CPU-second, and the cores each process used, beside
redis-benchmark's pipelined XADD measured on the same server. On a 2-core machine the simulator,
Redis and the feeders share two cores: the figures say where the limit moved. Not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchkit import cpu_seconds
from feeder_throughput import redis_benchmark, simulator

from polybus.redisproc import RedisServer, free_port
from polybus.rig import fast_env
from polybus.wire import keys


ROOT = Path(__file__).resolve().parents[1]


def feeders(
    n: int, ws_url: str, redis_url: str, tokens: list[str]
) -> list[subprocess.Popen[bytes]]:
    """N `polybus feed` processes sharing the partitions, one carrier each."""
    procs = []
    for i in range(n):
        env = {
            **os.environ,
            **fast_env(),
            "POLYBUS_TOKENS": ",".join(tokens),
            "WS_MARKET_URL": ws_url,
            "CLOB_URL": f"http://127.0.0.1:{free_port()}",  # no REST: books come on the socket
            "REDIS_URL": redis_url,
            "POLYBUS_FEEDER_ID": f"scale-{i}",
            "POLYBUS_REPLICAS": "1",
            "POLYBUS_STREAM_MAXLEN": "10000",
            "POLYBUS_STATS_INTERVAL": "3600",
        }
        cmd = [sys.executable, "-m", "polybus", "feed"]
        procs.append(
            subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    return procs


def seqs(server: RedisServer, tokens: list[str]) -> tuple[int, int]:
    """(sum of the books' seq, how many books are synced)."""
    with server.sync_client() as r:
        pipe = r.pipeline(transaction=False)
        for t in tokens:
            pipe.hmget(keys.book(t), "seq", "status")
        rows = pipe.execute()
    return sum(int(s or 0) for s, _ in rows), sum(1 for _, st in rows if st == "synced")


def run(args: argparse.Namespace, n: int) -> dict[str, float]:
    """One N: events/s over the window and each process's cores busy."""
    server = RedisServer()
    server.start()
    sim, ws_url, tokens = simulator(args)
    procs = feeders(n, ws_url, server.url, tokens)
    try:
        deadline = time.monotonic() + args.warmup + 60
        while seqs(server, tokens)[1] < len(tokens):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"{n} feeder(s): not every book synced within the warm-up")
            time.sleep(0.2)
        time.sleep(args.warmup)
        pids = {"simulator": sim.pid, "redis": server.proc.pid if server.proc else 0}
        pids |= {f"feeder{i}": p.pid for i, p in enumerate(procs)}
        cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
        seq0, t0 = seqs(server, tokens)[0], time.perf_counter()
        time.sleep(args.seconds)
        seq1, elapsed = seqs(server, tokens)[0], time.perf_counter() - t0
        cpu = {k: (cpu_seconds(pids[k]) - v) / elapsed for k, v in cpu0.items()}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)
        sim.terminate()
        sim.wait(10)
        server.close()
    return {"events_per_s": (seq1 - seq0) / elapsed, **{f"cpu_{k}": v for k, v in cpu.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeders", default="1,2", help="feeder counts to run, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--markets", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300_000)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        limit = redis_benchmark(server.port, 64, args.requests)
    finally:
        server.close()
    print(f"redis-benchmark XADD pipelined(-P 64): {limit:,.0f}/s", flush=True)
    first = 0.0
    for n in (int(x) for x in args.feeders.split(",")):
        r = run(args, n)
        rate = r["events_per_s"]
        first = first or rate
        feeder_cpu = sum(v for k, v in r.items() if k.startswith("cpu_feeder"))
        busy = {k[4:]: v for k, v in r.items() if k.startswith("cpu_")}
        print(
            f"{n} feeder(s): {rate:,.0f} events/s ({rate / limit:.2f}x pipelined XADD, "
            f"{rate / first:.2f}x one feeder), {rate / n:,.0f} per process, "
            f"{rate / max(feeder_cpu, 1e-9):,.0f} per feeder CPU-second\n"
            f"  cpu (cores busy, {sum(busy.values()):.2f} in all): "
            + ", ".join(f"{k} {v:.2f}" for k, v in busy.items()),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

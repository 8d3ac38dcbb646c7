"""The whole market on one feeder: `python bench/scale.py` (20,000 tokens, 100 connections).

    python bench/scale.py [--tokens 20000] [--rate 1000] [--per-connection 200]
                          [--stagger 0.25] [--deadline 60] [--steady 20] [--profile FILE]

Starts a private redis-server (polybus.redisproc.RedisServer), `polybus simulate` serving
`--tokens` tokens (`--tokens / 2` binary markets) at `--rate` engine actions/s (each action is
about 2 messages and 3 events; 1000 is ~3,000 events/s, a fifth of the live market's 10–15k:
what this shared 2-core machine sustains with 20,000 tokens, see docs/operations.md), and one
real `polybus feed` process (production timings; `WS_TOKENS_PER_CONNECTION` and
`WS_CONNECT_STAGGER` from the flags; `CLOB_URL` is the simulator's REST twin) carrying every
token, from a tokens file. While it runs it prints a progress line a second: book hashes whose
`status` is `synced` (read from Redis), the feeder's own count, and the feeder's RSS. It
reports

- the time from the feeder's start until every book hash says `synced`, and how many did at
  10, 20, 30, … s;
- the feeder's peak RSS (VmHWM, /proc) beside the 500 MB limit, and the simulator's RSS;
- after `--steady` seconds with every book synced: Redis `used_memory` per token (the rise
  over the empty server), the events/s the feeder published, the CPU of each process
  (from the feeder's start to all synced, and over the steady window), and how often the
  lone feeder lost its own partition leases (a sign of a starved event loop);
- bytes per stream entry measured in this run (the feeder's entries refilled to `--probe`
  entries in one stream, as bench/sizing.py does) and from it Redis memory per token at the
  default MAXLEN 100,000, beside sizing.py's 196 B/entry.

Exits 1 with a message when not every book is synced within `--deadline` s (or a child dies).
Every child is stopped on exit, on Ctrl-C and on SIGTERM. `--profile FILE` samples the feeder
with py-spy (if installed) into collapsed stacks. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import redis
from benchkit import cpu_seconds, renumbered

from polybus.redisproc import RedisServer, free_port
from polybus.wire import keys


ROOT = Path(__file__).resolve().parents[1]
RSS_LIMIT_MB = 500.0
DEFAULT_MAXLEN = 100_000
SIZING_B_PER_ENTRY = 196
"""bench/sizing.py's figure for the feeder's mix at MAXLEN 100,000 (docs/operations.md)."""
POLL_S = 1.0


class Failed(Exception):
    """The run could not meet what it measures (a deadline, a child that died)."""


def status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM); 0 once the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return orjson.loads(r.read())


# --- the children ------------------------------------------------------------------------------
class Children:
    """Child processes, stopped (SIGINT, then SIGKILL) in reverse order on close: SIGINT
    stops `polybus` as SIGTERM does, and makes py-spy write what it sampled."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        # Own process group: a Ctrl-C reaches this process only, which stops them in order
        # (the feeder before the simulator, so it logs no drop while stopping).
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def simulator(kids: Children, args: argparse.Namespace, logs: Path) -> tuple[Any, str, str]:
    """`polybus simulate` serving `--tokens` tokens: (process, ws url, http url)."""
    ws_port, http_port = free_port(), free_port()
    proc = kids.start(
        [
            *(sys.executable, "-m", "polybus", "simulate", "--port", str(ws_port)),
            *("--http-port", str(http_port), "--markets", str(args.tokens // 2)),
            *("--rate", str(args.rate), "--seed", str(args.seed)),
        ],
        stdout=subprocess.PIPE,
        stderr=(logs / "simulator.log").open("wb"),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline().decode()
    if not ready.startswith("simulator.ready"):
        raise Failed(f"the simulator did not start (see {logs / 'simulator.log'})")
    return proc, f"ws://127.0.0.1:{ws_port}/ws/market", f"http://127.0.0.1:{http_port}"


def feeder(kids: Children, args: argparse.Namespace, logs: Path, urls: tuple[str, str, str]) -> Any:
    """`polybus feed` on every token, production timings but for the shard settings."""
    ws_url, http_url, redis_url = urls
    env = {
        **os.environ,
        "WS_MARKET_URL": ws_url,
        "CLOB_URL": http_url,
        "REDIS_URL": redis_url,
        "POLYBUS_TOKENS_FILE": str(logs / "tokens.txt"),
        "WS_TOKENS_PER_CONNECTION": str(args.per_connection),
        "WS_CONNECT_STAGGER": str(args.stagger),
        "POLYBUS_FEEDER_ID": "scale",
        "POLYBUS_LOG_FORMAT": "json",
    }
    env.pop("POLYBUS_TOKENS", None)
    log = (logs / "feeder.log").open("wb")
    return kids.start(
        [sys.executable, "-m", "polybus", "feed"], stdout=log, stderr=log, env=env, cwd=logs
    )


def profile(kids: Children, args: argparse.Namespace, pid: int) -> None:
    """py-spy (if installed) samples the feeder from its start, collapsed stacks to a file."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        print("--profile: py-spy is not installed (pip install py-spy); not profiling")
        return
    seconds = str(int(args.deadline + args.steady + 5))
    kids.start(
        [spy, "record", "--pid", str(pid), "-d", seconds, "-f", "raw", "-o", args.profile],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# --- watching ----------------------------------------------------------------------------------
def statuses(r: redis.Redis, tokens: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """(token, its book hash's status) in pipelines of 5,000."""
    for at in range(0, len(tokens), 5_000):
        chunk = tokens[at : at + 5_000]
        pipe = r.pipeline(transaction=False)
        for token in chunk:
            pipe.hget(keys.book(token), "status")
        yield from zip(chunk, pipe.execute(), strict=True)


def alive(procs: dict[str, Any]) -> None:
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise Failed(f"the {name} exited with code {proc.returncode}")


def wait_synced(
    r: redis.Redis, tokens: list[str], args: argparse.Namespace, procs: dict[str, Any]
) -> tuple[float, dict[int, int]]:
    """Poll until every book hash is `synced`: (seconds from the feeder's start, synced
    count at each 10 s mark).

    Only books not yet seen synced are read each poll (reading all 20,000 every second would
    load the machine it measures); once none is left, one full pass confirms all at once."""
    feeder_pid = procs["feeder"].pid
    started = time.monotonic()
    left, marks, next_mark = list(tokens), dict[int, int](), 10
    while True:
        time.sleep(POLL_S)
        alive(procs)
        elapsed = time.monotonic() - started
        left = [t for t, s in statuses(r, left) if s != b"synced"]
        if not left:
            left = [t for t, s in statuses(r, tokens) if s != b"synced"]
            if not left:
                return time.monotonic() - started, marks
        synced = len(tokens) - len(left)
        while elapsed >= next_mark:
            marks[next_mark], next_mark = synced, next_mark + 10
        health = r.hgetall(keys.feeder("scale"))
        print(
            f"  {elapsed:5.1f} s  synced {synced:>6,}/{len(tokens):,} (Redis), "
            f"{int(health.get(b'synced', 0)):>6,} (feeder)  feeder RSS "
            f"{status_kb(feeder_pid, 'VmRSS') / 1024:4.0f} MB",
            flush=True,
        )
        if elapsed > args.deadline:
            raise Failed(
                f"{len(left):,} of {len(tokens):,} books not synced {args.deadline:g} s after "
                f"the feeder started (e.g. {left[0]}: {r.hget(keys.book(left[0]), 'status')!r})"
            )


def entry_size(r: redis.Redis, tokens: list[str], probe: int) -> tuple[float, float, int]:
    """(bytes per entry, the mean book hash, mean entries a stream now).

    The streams are far too short here to show an entry's size (a stream's fixed cost hides
    it), so the entries the feeder wrote in this run are XADDed, in their order, into one
    probe stream of `probe` entries, `seq` and `rx` counting on and `MAXLEN ~` as the
    feeder trims (as bench/sizing.py does): its MEMORY USAGE over its length."""
    entries: list[Any] = []
    books, lengths = [], []
    for at in range(0, len(tokens), 2_000):
        pipe = r.pipeline(transaction=False)
        for token in tokens[at : at + 2_000]:
            pipe.xlen(keys.stream(token))
            pipe.memory_usage(keys.book(token), samples=0)
        out = pipe.execute()
        lengths += out[0::2]
        books += [int(b or 0) for b in out[1::2]]
    for token in tokens:
        found: Any = r.xrange(keys.stream(token))
        entries += [fields for _, fields in found]
        if len(entries) >= 5_000:
            break
    key = "scale:probe"
    pipe = r.pipeline(transaction=False)
    for i, fields in enumerate(renumbered(entries, probe), 1):
        pipe.xadd(key, fields, maxlen=probe, approximate=True)
        if i % 1_000 == 0:
            pipe.execute()
    pipe.execute()
    per_entry = int(r.memory_usage(key, samples=0) or 0) / int(r.xlen(key))
    r.delete(key)
    return per_entry, sum(books) / len(books), round(sum(lengths) / len(lengths))


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


# --- the run -----------------------------------------------------------------------------------
def run(args: argparse.Namespace, kids: Children, server: RedisServer) -> None:
    logs = args.logs = Path(tempfile.mkdtemp(prefix="polybus-scale-"))
    print(
        f"{args.tokens:,} tokens, {args.per_connection} a connection, stagger {args.stagger:g} s, "
        f"rate {args.rate:g} actions/s; logs in {logs}; load {load()}",
        flush=True,
    )
    r = redis.Redis(port=server.port)
    empty = used_memory(r)
    t0 = time.monotonic()
    sim, ws_url, http_url = simulator(kids, args, logs)
    tokens = get_json(f"{http_url}/_sim/tokens")
    print(f"simulator up in {time.monotonic() - t0:.1f} s: {len(tokens):,} tokens", flush=True)
    (logs / "tokens.txt").write_text("\n".join(tokens) + "\n")
    assert server.proc is not None
    procs = {"simulator": sim}
    procs["feeder"] = feeder(kids, args, logs, (ws_url, http_url, server.url))
    pids = {"feeder": procs["feeder"].pid, "simulator": sim.pid, "redis": server.proc.pid}
    pids["bench"] = os.getpid()
    if args.profile:
        profile(kids, args, procs["feeder"].pid)
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    took, marks = wait_synced(r, tokens, args, procs)
    print(
        f"every book synced {took:.1f} s after the feeder started (limit {args.deadline:g} s); "
        "synced at " + ", ".join(f"{s} s: {n:,}" for s, n in marks.items())
    )
    steady(args, r, tokens, procs, pids, cpu0, took, empty, http_url)


def steady(
    args: argparse.Namespace,
    r: redis.Redis,
    tokens: list[str],
    procs: dict[str, Any],
    pids: dict[str, int],
    cpu0: dict[str, float],
    took: float,
    empty: int,
    http_url: str,
) -> None:
    """The steady window after every book is synced: rates, memory and CPU."""
    health0 = r.hgetall(keys.feeder("scale"))
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    sim0, began = get_json(f"{http_url}/_sim/stats"), time.monotonic()
    time.sleep(args.steady)
    alive(procs)
    wall = time.monotonic() - began
    health = r.hgetall(keys.feeder("scale"))
    sim1 = get_json(f"{http_url}/_sim/stats")
    cpu2 = {k: cpu_seconds(p) for k, p in pids.items()}
    published = int(health[b"published"]) - int(health0[b"published"])
    used = used_memory(r) - empty
    per_entry, book, mean_len = entry_size(r, tokens, args.probe)
    not_synced = sum(s != b"synced" for _, s in statuses(r, tokens))
    feeder_pid, sim_pid = pids["feeder"], pids["simulator"]
    hwm = status_kb(feeder_pid, "VmHWM") / 1024
    print(
        f"steady {wall:.0f} s: feeder published {published / wall:,.0f} events/s "
        f"({(sim1['messages'] - sim0['messages']) / wall:,.0f} simulator messages/s); "
        f"books not synced at the end: {not_synced}"
    )
    print(
        f"feeder RSS peak {hwm:.0f} MB ({hwm / RSS_LIMIT_MB:.2f}x the {RSS_LIMIT_MB:.0f} MB "
        f"limit), now {status_kb(feeder_pid, 'VmRSS') / 1024:.0f} MB; simulator RSS "
        f"{status_kb(sim_pid, 'VmRSS') / 1024:.0f} MB (peak "
        f"{status_kb(sim_pid, 'VmHWM') / 1024:.0f} MB)"
    )
    at_cap = per_entry * DEFAULT_MAXLEN + book
    print(
        f"Redis used_memory {used / 1e6:.1f} MB over the empty server = {used / len(tokens):,.0f}"
        f" B/token now ({mean_len} entries a stream); stream entry {per_entry:.0f} B (this "
        f"run's entries refilled to {args.probe:,}; sizing.py: {SIZING_B_PER_ENTRY} B), book "
        f"hash {book:,.0f} B"
    )
    print(
        f"at MAXLEN {DEFAULT_MAXLEN:,}: {at_cap / 1e6:.1f} MB/token from this run's entry size "
        f"({(SIZING_B_PER_ENTRY * DEFAULT_MAXLEN + book) / 1e6:.1f} MB with sizing.py's), so "
        f"{at_cap * len(tokens) / 2**30:,.0f} GiB for {len(tokens):,} tokens"
    )
    lost = (args.logs / "feeder.log").read_text().count('"feeder.lease.lost"')
    print(f"feeder lost its own leases {lost} time(s) (a lone feeder should never)")
    for name, before, after in (("start→synced", cpu0, cpu1), ("steady", cpu1, cpu2)):
        span = took if name == "start→synced" else wall
        busy = {k: (after[k] - before[k]) / span for k in after}
        print(
            f"cores busy, {name} ({sum(busy.values()):.2f} in all): "
            + ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
        )
    print(f"load after: {load()}")


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM stops the bench as Ctrl-C does: through `finally`, children and all."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tokens", type=int, default=20_000, help="even: YES/NO pairs")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="simulator actions/s (≈3 events each)"
    )
    parser.add_argument("--per-connection", type=int, default=200)
    parser.add_argument("--stagger", type=float, default=0.25, help="s between connections")
    parser.add_argument("--deadline", type=float, default=60.0, help="s to every book synced")
    parser.add_argument("--steady", type=float, default=20.0, help="s measured once synced")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--probe", type=int, default=20_000, help="entries to size one by")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the feeder: collapsed stacks")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    kids, server = Children(), RedisServer()
    server.start()
    try:
        run(args, kids, server)
    except Failed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        kids.close()
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

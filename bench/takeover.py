"""Takeover time of redundant feeders (issue 13, docs/ha.md): SIGKILL and SIGTERM of the leader.

    python bench/takeover.py [--kills 20] [--terms 5] [--lease-ms 3000] [--markets 8]

A private redis-server, an in-process simulator and two real `polybus feed` processes on the
same tokens and prefix. Each round waits until one feeder leads every partition and the other
is warm for every partition that holds tokens, signals the leader (SIGKILL, then SIGTERM for
the graceful hand-over), and polls the leases until every one names the survivor. After ~1 s
more flow it counts the exchange events (book hashes the simulator stamped, per token, from
1 s before the signal to 1 s after the takeover) that appear in no stream entry of that
token, then starts a fresh feeder as the next standby. A random pause of up to one beat
before each signal and each restart (`--no-jitter` to drop it) spreads the signal over the
phases of the leader's renewals and the standby's beats; without it the rounds lock to one
phase (17 of 20 kills within 60 ms of each other). Prints a line per round and a summary;
exits 1 when a round times out, 130 on Ctrl-C, and never leaves a process behind. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import logging
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis.asyncio as aioredis
import structlog
from benchkit import RedisServer, fast_env, wait_for
from redis.exceptions import RedisError

from polybus.simulator import SimConfig, Simulator
from polybus.wire import keys
from polybus.wire.errors import DecodeError
from polybus.wire.hashes import decode_health
from polybus.wire.partitions import decode_lease, partition_of


STEADY_TIMEOUT = 30.0
"""Seconds a round may wait for a leader of everything and a warm standby."""


class RoundTimeout(Exception):
    """A round did not reach its next state in time (the bench stops, exit 1)."""


@dataclass
class FeederProc:
    """One `polybus feed` child, in its own session so a Ctrl-C reaches only the bench."""

    name: str
    env: dict[str, str]
    logdir: Path
    proc: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None

    async def start(self) -> FeederProc:
        self._log = (self.logdir / f"{self.name}.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polybus",
            "feed",
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, **self.env, "POLYBUS_FEEDER_ID": self.name},
            cwd=self.logdir,
            start_new_session=True,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def send(self, sig: signal.Signals) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def reap(self, timeout: float = 10.0) -> int | None:
        """Wait for the process to end (SIGKILL after `timeout`); its exit code."""
        if self.proc is None:
            return None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


@dataclass
class Round:
    """One signal to the leader and what followed."""

    kind: str
    leader: str
    survivor: str
    took_ms: float
    first_ms: float
    """When the first partition named the survivor."""
    events: int
    """Exchange events stamped in the window (both sides of every book)."""
    missing: int
    snapshot_only: int
    """Events in no price_change entry, only in a `book` entry's hash (covered by a snapshot)."""
    duplicates: int
    seq_gaps: int
    exit_code: int | None
    exit_ms: float
    details: list[str] = field(default_factory=list)


def stamped(sim: Simulator) -> dict[str, list[tuple[float, str]]]:
    """Record every book hash the exchange stamps, per token, with when (monotonic)."""
    engine = sim.engine
    seen: dict[str, list[tuple[float, str]]] = {}
    real = engine._hashes

    def hashes(m: Any, *args: Any) -> tuple[str, str]:
        out = real(m, *args)
        now = time.monotonic()
        seen.setdefault(m.yes, []).append((now, out[0]))
        seen.setdefault(m.no, []).append((now, out[1]))
        return out

    engine._hashes = hashes  # type: ignore[method-assign]
    return seen


class Bench:
    """The pair of feeders, the Redis they share, and the rounds measured so far."""

    def __init__(
        self, args: argparse.Namespace, sim: Simulator, server: RedisServer, logdir: Path
    ) -> None:
        self.args, self.sim, self.logdir = args, sim, logdir
        self.redis: aioredis.Redis = server.client()
        self.tokens = sim.engine.tokens()
        self.env = fast_env(
            POLYBUS_LEASE_MS=str(args.lease_ms),
            POLYBUS_TOKENS=",".join(self.tokens),
            WS_MARKET_URL=sim.ws_url,
            CLOB_URL=sim.http_url,
            REDIS_URL=server.url,
        )
        self.seen = stamped(sim)
        self.feeders: list[FeederProc] = []
        self.started = 0
        self.partitions = 16
        self.used: set[int] = set()
        self.rounds: list[Round] = []
        self.rng = random.Random(args.seed)
        self.warm_since: dict[str, float] = {}
        """feeder -> when a steady-state check first saw it warm for every used partition."""

    async def spawn(self) -> FeederProc:
        self.started += 1
        proc = await FeederProc(f"f{self.started}", self.env, self.logdir).start()
        self.feeders.append(proc)
        return proc

    async def close(self) -> None:
        """Kill every feeder still running and wait for it: nothing is left behind."""
        for proc in self.feeders:  # all killed before any wait: nothing awaits in between
            if proc.alive:
                assert proc.proc is not None
                proc.proc.kill()
        for proc in self.feeders:
            await proc.reap(5)
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    async def leases(self) -> dict[int, str]:
        """partition -> the feeder holding its lease (free partitions absent)."""
        values = await self.redis.mget([keys.lease(p) for p in range(self.partitions)])
        out: dict[int, str] = {}
        for p, v in enumerate(values):
            with contextlib.suppress(DecodeError):
                if v:
                    out[p] = decode_lease(v).holder
        return out

    async def warm(self, name: str) -> frozenset[int]:
        return decode_health(await self.redis.hgetall(keys.feeder(name))).warm

    async def first_leader(self) -> None:
        """Start one feeder, let it take every lease, learn the partition count."""
        first = await self.spawn()

        async def leads_all() -> bool:
            held = await self.leases()
            return len(held) == self.partitions and set(held.values()) == {first.name}

        async def recorded() -> bool:
            return await self.redis.get(keys.partitions()) is not None

        await self.wait(recorded, STEADY_TIMEOUT, "the first feeder to record the partitions")
        self.partitions = int(await self.redis.get(keys.partitions()))
        self.used = {partition_of(t, self.partitions) for t in self.tokens}
        await self.wait(leads_all, STEADY_TIMEOUT, f"{first.name} to lead every partition")
        await self.spawn()

    async def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> None:
        try:
            await wait_for(predicate, timeout, what, interval=0.05)
        except TimeoutError as exc:
            raise RoundTimeout(str(exc)) from None

    async def steady(self) -> tuple[FeederProc, FeederProc]:
        """Wait until one live feeder leads every partition and the other is warm for all used."""
        live = [p for p in self.feeders if p.alive]
        if len(live) != 2:
            raise RoundTimeout(f"expected two live feeders, have {[p.name for p in live]}")
        found: list[FeederProc] = []

        async def ready() -> bool:
            held = await self.leases()
            holders = set(held.values())
            if len(held) != self.partitions or len(holders) != 1:
                return False
            leader = next((p for p in live if p.name in holders), None)
            if leader is None:
                return False
            standby = next(p for p in live if p is not leader)
            for proc in (leader, standby):
                if not self.used <= await self.warm(proc.name):
                    return False
                self.warm_since.setdefault(proc.name, time.monotonic())
            found[:] = [leader, standby]
            return True

        await self.wait(
            ready,
            STEADY_TIMEOUT,
            "one feeder leading every partition and both warm for every used partition",
        )
        # The counting window opens 1 s before the signal: it must not reach back into the
        # leader's own start (events before its first snapshot are no takeover's loss).
        settle = self.warm_since[found[0].name] + 1.2 - time.monotonic()
        if settle > 0:
            await asyncio.sleep(settle)
            return await self.steady()
        return found[0], found[1]

    async def takeover(self, survivor: str, since: float) -> tuple[float, float]:
        """Poll the leases until all name `survivor`; (first, all) seconds after `since`."""
        limit = self.args.lease_ms / 1000 + 5.0
        first = None
        while True:
            now_leases = await self.leases()
            now = time.monotonic() - since
            named = sum(h == survivor for h in now_leases.values())
            if named and first is None:
                first = now
            if named == self.partitions:
                return first if first is not None else now, now
            if now > limit:
                raise RoundTimeout(
                    f"no takeover within lease + 5 s ({limit:.1f} s): {named} of "
                    f"{self.partitions} partitions led by {survivor}; leases held: "
                    f"{dict(collections.Counter(now_leases.values())) or 'none'}"
                )
            await asyncio.sleep(self.args.poll_ms / 1000)

    async def jitter(self) -> None:
        """A random pause of up to one beat (lease/3). Without it every round starts the same
        time after the previous takeover, so the signal lands at the same phase of the
        leader's renewals and the standby's beats, and the spread measures one phase only."""
        if self.args.jitter:
            await asyncio.sleep(self.rng.uniform(0, self.args.lease_ms / 3000))

    async def one(self, kind: str, sig: signal.Signals) -> Round:
        await self.steady()
        await self.jitter()
        leader, standby = await self.steady()
        wall = time.time()
        kill = time.monotonic()
        leader.send(sig)
        exited = asyncio.create_task(self.exit_time(leader, kill))
        try:
            first, took = await self.takeover(standby.name, kill)
            end = kill + took + 1.0
            await asyncio.sleep(end + 0.3 - time.monotonic())  # flow under the new leader,
            # then a little slack so events stamped just before `end` are in Redis when we read
            code, exit_ms = await exited
        finally:
            exited.cancel()
        result = Round(
            kind, leader.name, standby.name, took * 1000, first * 1000, 0, 0, 0, 0, 0, code, exit_ms
        )
        await self.count(result, kill - 1.0, end, wall - 3.0, kill)
        await self.jitter()  # the new standby's beats get a phase of their own
        await self.spawn()
        return result

    @staticmethod
    async def exit_time(proc: FeederProc, since: float) -> tuple[int | None, float]:
        """The signalled process's exit code, and when it exited (ms after `since`)."""
        code = await proc.reap(10.0)
        return code, (time.monotonic() - since) * 1000

    async def count(
        self, r: Round, start: float, end: float, wall_from: float, kill: float
    ) -> None:
        """Fill in the round's event counts from the hook and the streams."""
        since = f"{int(wall_from * 1000)}-0"
        for token in self.tokens:
            entries = [f for _, f in await self.redis.xrange(keys.stream(token), min=since)]
            any_hash = {f.get("hash") for f in entries}
            changes = [f for f in entries if f.get("type") == "price_change" and "hash" in f]
            change_set = {f["hash"] for f in changes}
            window = [(t, h) for t, h in self.seen.get(token, ()) if start <= t <= end]
            r.events += len(window)
            lost = [(t, h) for t, h in window if h not in any_hash]
            r.missing += len(lost)
            r.snapshot_only += sum(h in any_hash and h not in change_set for _, h in window)
            # a sweep's levels share one hash, so a duplicate is the same whole change twice
            in_window = {h for _, h in window}
            written = [
                (f.get("ts"), f["hash"], f.get("side"), f.get("price"), f.get("size"))
                for f in changes
                if f["hash"] in in_window
            ]
            r.duplicates += len(written) - len(set(written))
            seqs = [int(f["seq"]) for f in entries if f.get("seq", "").isdigit()]
            r.seq_gaps += sum(b != a + 1 for a, b in itertools.pairwise(seqs))
            if lost:
                offsets = [round((t - kill) * 1000) for t, _ in lost]
                r.details.append(
                    f"token …{token[-8:]} (partition "
                    f"{partition_of(token, self.partitions)}): {len(lost)} missing, "
                    f"stamped {min(offsets)}..{max(offsets)} ms after the signal"
                )
            # keep the hook's memory flat: nothing before this window is looked at again
            self.seen[token] = [(t, h) for t, h in self.seen.get(token, ()) if t > start]


def line(i: int, total: int, r: Round) -> str:
    extra = ""
    if r.snapshot_only or r.duplicates or r.seq_gaps:
        extra = f"  snapshot-only {r.snapshot_only} dup {r.duplicates} seq-gaps {r.seq_gaps}"
    return (
        f"{r.kind} {i:>2}/{total}: {r.leader} -> {r.survivor}  takeover "
        f"{r.took_ms:7.1f} ms (first partition {r.first_ms:7.1f})  events {r.events:>4}  "
        f"missing {r.missing}  exit {r.exit_code} at {r.exit_ms:6.0f} ms{extra}"
    )


def spread(values: list[float]) -> str:
    if not values:
        return "no rounds"
    return (
        f"min {min(values):.0f}  median {statistics.median(values):.0f}  "
        f"max {max(values):.0f} ms (n={len(values)})"
    )


async def ping_limit(redis: aioredis.Redis, n: int = 500) -> tuple[float, float]:
    """Median PING and 16-lease MGET round trips (ms): the floor under any measured hand-over."""
    pings, mgets = [], []
    lease_keys = [keys.lease(p) for p in range(16)]
    for _ in range(n):
        t0 = time.perf_counter()
        await redis.ping()
        t1 = time.perf_counter()
        await redis.mget(lease_keys)
        pings.append(t1 - t0)
        mgets.append(time.perf_counter() - t1)
    return statistics.median(pings) * 1000, statistics.median(mgets) * 1000


def summary(bench: Bench, limit: tuple[float, float]) -> None:
    lease = bench.args.lease_ms
    beat = lease / 3
    kills = [r for r in bench.rounds if r.kind == "SIGKILL"]
    terms = [r for r in bench.rounds if r.kind == "SIGTERM"]
    print("\nsummary")
    print(
        f"  lease {lease} ms, beat {beat:.0f} ms (lease/3), poll every {bench.args.poll_ms} ms, "
        f"jitter {'on' if bench.args.jitter else 'off'}; "
        f"{len(bench.tokens)} tokens on {len(bench.used)} of {bench.partitions} partitions, "
        f"simulator {bench.args.rate:g} actions/s"
    )
    print(f"  SIGKILL takeover: {spread([r.took_ms for r in kills])}")
    print(
        f"    expected between lease - beat = {lease - beat:.0f} and lease + beat = "
        f"{lease + beat:.0f} ms; promise (issue 13) lease + 1 s = {lease + 1000} ms"
    )
    print(f"  SIGTERM hand-over: {spread([r.took_ms for r in terms])}")
    if terms:
        print(f"    the old leader exited after: {spread([r.exit_ms for r in terms])}")
    for kind, rounds in (("SIGKILL", kills), ("SIGTERM", terms)):
        if rounds:
            print(
                f"  missing events, {kind}: total {sum(r.missing for r in rounds)} of "
                f"{sum(r.events for r in rounds)} stamped in the windows, max "
                f"{max(r.missing for r in rounds)} in one round; snapshot-only "
                f"{sum(r.snapshot_only for r in rounds)}, duplicates "
                f"{sum(r.duplicates for r in rounds)}, seq gaps "
                f"{sum(r.seq_gaps for r in rounds)}"
            )
    print(
        f"  limit: Redis PING round trip {limit[0]:.3f} ms, 16-lease MGET {limit[1]:.3f} ms "
        f"(median, this run)"
    )
    for r in bench.rounds:
        for d in r.details:
            print(f"  {r.kind} {r.leader} -> {r.survivor}: {d}")


async def run(args: argparse.Namespace, logdir: Path) -> int:
    server = RedisServer()
    server.start()
    sim = Simulator(
        SimConfig(
            markets=args.markets,
            seed=args.seed,
            rate=args.rate,
            new_market_every=0.0,
            resolve_every=0.0,
        )
    )
    bench: Bench | None = None
    try:
        await sim.start(host="127.0.0.1", port=0, http_port=0)
        bench = Bench(args, sim, server, logdir)
        limit = await ping_limit(bench.redis)
        print(f"redis {server.url}, simulator {sim.ws_url}, logs in {logdir}", flush=True)
        print(
            f"limit: Redis PING round trip {limit[0]:.3f} ms, 16-lease MGET {limit[1]:.3f} ms",
            flush=True,
        )
        print("starting the first feeder and its standby …", flush=True)
        await bench.first_leader()
        plan = [("SIGKILL", signal.SIGKILL)] * args.kills + [
            ("SIGTERM", signal.SIGTERM)
        ] * args.terms
        counts = {"SIGKILL": args.kills, "SIGTERM": args.terms}
        done = {"SIGKILL": 0, "SIGTERM": 0}
        for kind, sig in plan:
            r = await bench.one(kind, sig)
            bench.rounds.append(r)
            done[kind] += 1
            print(line(done[kind], counts[kind], r), flush=True)
            for d in r.details:
                print(f"    {d}", flush=True)
        summary(bench, limit)
        odd = any(r.missing or r.duplicates or r.seq_gaps for r in bench.rounds)
        return 2 if odd else 0
    except RoundTimeout as exc:
        print(f"\nround timed out: {exc}\nfeeder logs kept in {logdir}", file=sys.stderr)
        if bench is not None and bench.rounds:
            summary(bench, (float("nan"), float("nan")))
        return 1
    except (RedisError, OSError) as exc:
        # A Ctrl-C reaches redis-server too (same process group) and it may go first: let
        # the interrupt land before calling this a failure.
        await asyncio.sleep(0.5)
        print(f"\nredis-server went away: {exc}\nfeeder logs kept in {logdir}", file=sys.stderr)
        return 1
    finally:
        if bench is not None:
            await bench.close()
        with contextlib.suppress(Exception):
            await sim.stop()
        server.close()


async def main_task(args: argparse.Namespace, logdir: Path) -> int:
    """Run the bench; Ctrl-C or SIGTERM cancels it once, and the clean-up runs to its end."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: None)  # a second Ctrl-C must not cut cleanup
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    return await run(args, logdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILL rounds")
    parser.add_argument("--terms", type=int, default=5, help="SIGTERM rounds")
    parser.add_argument("--lease-ms", type=int, default=3000, help="POLYBUS_LEASE_MS")
    parser.add_argument("--markets", type=int, default=8, help="two tokens each")
    parser.add_argument("--rate", type=float, default=200.0, help="simulator actions/s")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--poll-ms", type=float, default=10.0, help="lease polling interval")
    parser.add_argument(
        "--jitter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random pauses of up to a beat before each signal and restart, "
        "so the signal lands at a random phase of the beats",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the feeders' logs even when every round is clean",
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logdir = Path(tempfile.mkdtemp(prefix="polybus-takeover-"))
    code = 130
    try:
        code = asyncio.run(main_task(args, logdir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"\ninterrupted; every process stopped; feeder logs in {logdir}", file=sys.stderr)
        return 130
    if code == 2:  # measured fine, but something went missing: the logs say why
        print(f"feeder logs kept in {logdir}")
        return 0
    if code == 0 and not args.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)
    elif code == 0:
        print(f"feeder logs in {logdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""`polybus health [--json]`: one verdict on the whole bus, usable as a healthcheck.

Reads every feeder's health hash and each consumer's published cursor — never the book
hashes: the books that count are the ones a live feeder carries, and each feeder's hash says how
many it carries (`tokens`) and how many of them are synced (`synced`). So one call costs one read
per feeder whatever the number of books, and a book nobody carries any more (`retired`, expiring
after POLYBUS_RETIRED_TTL; or left behind by a feeder that was restarted with other tokens) never
turns the verdict red. Exit codes: 0 healthy, 1 unhealthy, 2 Redis unreachable.

Redundant feeders (a prefix with `P:partitions`, docs/ha.md): each partition's leader (the
holder of `P:lease:{pN}`), fence and lease age (`lease_ms` − PTTL: time since the leader last
renewed it), and its standbys (live members — `P:members`, expiry on the server's clock —
whose health hash's `carrying` includes it, other than the leader). A partition some live
member carries with no leader is unhealthy (nobody writes its tokens: books there are not
maintained, wire/maintained.py); one with no standby is a warning (a kill of its leader then
leaves it unwritten until a feeder comes back), not a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster

from polybus.consumers.writers import read_partitions
from polybus.redisio import REDIS_ERRORS, Client, connect, on_cluster
from polybus.wire import keys
from polybus.wire.hashes import FeederHealth, decode_health, health_report
from polybus.wire.maintained import partition_count, read_lease
from polybus.wire.settings import bus_target


__all__ = ["Report", "check", "partition_leaders", "register", "text_lines"]

DEFAULT_LEASE_MS = 3000


@dataclass
class Report:
    """What `polybus health` found."""

    healthy: bool = True
    problems: list[str] = field(default_factory=list)
    feeders: dict[str, dict[str, Any]] = field(default_factory=dict)
    books: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Worth a look, not unhealthy (a carried partition without a standby)."""
    partition_count: int = 0
    """`P:partitions` (0: none, older feeders)."""
    partitions: list[dict[str, Any]] = field(default_factory=list)
    """Per partition: `partition`, `leader` ("" none), `fence`, `lease_age_ms`, `lease_ms`,
    `standbys`, `carriers` (live members carrying it)."""

    def fail(self, problem: str) -> None:
        self.healthy = False
        self.problems.append(problem)


async def _scan(redis: Client, pattern: str) -> list[str]:
    # Feeder and consumer keys are few among 2 keys per token: large SCAN steps, few round trips.
    return [str(k) async for k in redis.scan_iter(match=pattern, count=10_000)]


async def check(redis: Client, prefix: str, max_silence: float, max_lag_ms: float) -> Report:
    """Inspect feeders, the books they carry, and consumers under `prefix`."""
    report = Report()
    healths: dict[str, FeederHealth] = {}
    live: dict[str, FeederHealth] = {}
    for key in sorted(await _scan(redis, keys.feeder_pattern(prefix))):
        health = decode_health(await redis.hgetall(key))
        name = key.rsplit(":", 1)[-1]
        report.feeders[name] = health_report(health)
        healths[name] = health
        age = time.time() * 1000 - health.updated_ms
        if age > max(3 * health.interval_ms, 3000):  # missed heartbeats: dead, its key lingers
            report.fail(f"feeder {name} silent for {age / 1000:.1f}s (killed or hung?)")
            continue
        live[name] = health
        if health.state != "ok":
            report.fail(f"feeder {name} is {health.state or None}")
        for conn in health.connections:
            if conn.state != "subscribed":
                report.fail(f"feeder {name} connection {conn.id} is {conn.state}")
            elif conn.silence_s > max_silence:
                report.fail(f"feeder {name} connection {conn.id} silent {conn.silence_s:.0f}s")
    if not report.feeders:
        report.fail("no live feeder (no health key): is `polybus feed` running?")
    carried = sum(health.tokens for health in live.values())
    synced = sum(health.synced for health in live.values())
    report.books = {"carried": carried, "synced": synced}
    if synced < carried:
        report.fail(f"{carried - synced} of {carried} carried books not synced")
    await partition_leaders(redis, prefix, live, report)
    for key in sorted(await _scan(redis, keys.consumer_pattern(prefix))):
        info = {str(k): str(v) for k, v in (await redis.hgetall(key)).items()}
        name = key.split(":", 2)[-1]
        report.consumers[name] = info
        lag = float(info.get("lag_ms") or 0)
        if lag > max_lag_ms:
            report.fail(f"consumer {name} lags {lag / 1000:.1f}s")
    return report


async def partition_leaders(
    redis: Client, prefix: str, live: dict[str, FeederHealth], report: Report
) -> None:
    """Fill the report's partitions (see the module docstring); nothing for older feeders."""
    raw = await read_partitions(redis, prefix)
    if raw is None:
        return
    count = partition_count(raw)
    if count is None:
        report.fail(
            f"{keys.partitions(prefix)} holds {raw!r:.40}, not a partition count: "
            "no feeder can lead"
        )
        return
    report.partition_count = count
    replies = await _lease_reads(redis, prefix, count)
    members = _live_members(replies[0], replies[1])
    carrying = {m: live[m].carrying for m in members if m in live}
    default_ms = max((h.lease_ms for h in live.values()), default=0) or DEFAULT_LEASE_MS
    for p in range(count):
        lease_raw, pttl = replies[2 + 2 * p], replies[3 + 2 * p]
        lease = None if isinstance(lease_raw, Exception) else read_lease(lease_raw)
        carriers = sorted(m for m, ps in carrying.items() if p in ps)
        leader = lease.holder if lease else ""
        lease_ms = (live[leader].lease_ms if leader in live else 0) or default_ms
        ttl = pttl if isinstance(pttl, int) and pttl >= 0 else None
        report.partitions.append(
            {
                "partition": p,
                "leader": leader,
                "fence": lease.fence if lease else None,
                "lease_age_ms": max(lease_ms - ttl, 0) if lease and ttl is not None else None,
                "lease_ms": lease_ms,
                "standbys": [m for m in carriers if m != leader],
                "carriers": carriers,
            }
        )
        if carriers and not lease:
            why = "" if lease_raw is None else f" (lease holds {lease_raw!r:.40})"
            report.fail(
                f"partition {p} has no leader{why}: carried by {', '.join(carriers)}, "
                "nobody writes its tokens"
            )
    lonely = [
        str(row["partition"])
        for row in report.partitions
        if row["carriers"] and row["leader"] and not row["standbys"]
    ]
    if lonely:
        report.warnings.append(
            f"no standby for partition(s) {','.join(lonely)}: a kill of "
            "their leader leaves them unwritten"
        )


async def _lease_reads(redis: Client, prefix: str, count: int) -> list[Any]:
    """[TIME of the members' server, members with expiries, then GET and PTTL of each lease],
    error replies in place: one pipeline (one round trip per primary on a cluster)."""
    members = keys.members(prefix)
    pipe = redis.pipeline(transaction=False)
    if not on_cluster(redis):
        pipe.time()
    pipe.zrange(members, 0, -1, withscores=True)
    for p in range(count):
        pipe.get(keys.lease(p, prefix))
        pipe.pttl(keys.lease(p, prefix))
    replies: list[Any] = await pipe.execute(raise_on_error=False)
    if on_cluster(redis):  # a cluster pipeline refuses TIME, a command of no key
        replies.insert(0, await _time_of(redis, members))
    return replies


async def _time_of(redis: RedisCluster, key: str) -> Any:
    """TIME of the primary serving `key`: the clock the members' expiries were written by
    (their Lua step runs there); an error reply as garbage, like the pipeline's."""
    try:
        return await redis.execute_command("TIME", target_nodes=redis.get_node_from_key(key))
    except REDIS_ERRORS as exc:
        return exc


def _live_members(now: Any, scores: Any) -> list[str]:
    """Members whose expiry (server ms) is after the server's TIME; garbage reads as none."""
    if not isinstance(now, list | tuple) or not isinstance(scores, list):
        return []
    try:
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    except (ValueError, TypeError, IndexError):
        return []
    return sorted(
        str(m) for m, score in scores if isinstance(score, int | float) and score > now_ms
    )


def register(subparsers: Any) -> None:
    """Add the `health` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "health", help="check feeders, books and consumers; exit non-zero when unhealthy"
    )
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument(
        "--max-silence",
        type=float,
        default=90.0,
        help="a connection silent longer than this is unhealthy (s)",
    )
    p.add_argument(
        "--max-lag",
        type=float,
        default=30.0,
        help="a consumer lagging more than this is unhealthy (s)",
    )
    p.set_defaults(func=run, uses_redis=True, log_level_default="warning")


async def run(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Print the verdict; 0 healthy, 1 unhealthy (an unreachable Redis escapes: exit 2)."""
    target = bus_target(os.environ, redis_url=args.redis_url, prefix=args.prefix)
    redis = await connect(target.redis_url, decode_responses=True, socket_connect_timeout=3)
    try:
        report = await check(redis, target.prefix, args.max_silence, args.max_lag * 1000)
    finally:
        await redis.aclose()
    if args.json:
        print(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2).decode())
    else:
        print("\n".join(text_lines(report)))
    return 0 if report.healthy else 1


def text_lines(report: Report) -> list[str]:
    """What `polybus health` prints: the verdict, problems, warnings, then each partition."""
    verdict = "healthy" if report.healthy else "UNHEALTHY"
    books = " ".join(f"{k}={v}" for k, v in report.books.items())
    lines = [
        f"{verdict}: feeders={len(report.feeders)} books: {books} consumers={len(report.consumers)}"
    ]
    lines += [f"  - {problem}" for problem in report.problems]
    lines += [f"  warning: {warning}" for warning in report.warnings]
    if report.partition_count:
        lines.append(f"partitions={report.partition_count}")
    for row in report.partitions:
        if not row["leader"] and not row["carriers"]:
            continue  # nobody carries it: nothing to say
        standbys = ",".join(row["standbys"]) or "none"
        if row["leader"]:
            age = row["lease_age_ms"]
            lines.append(
                f"  p{row['partition']:<3} leader {row['leader']} fence {row['fence']} "
                f"lease age {'?' if age is None else f'{age / 1000:.1f}s'}/"
                f"{row['lease_ms'] / 1000:g}s  standbys {standbys}"
            )
        else:
            lines.append(f"  p{row['partition']:<3} NO LEADER  standbys {standbys}")
    return lines

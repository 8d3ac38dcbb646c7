"""`polybus health [--json]`: one verdict on the whole bus, usable as a healthcheck.

Reads every feeder's health hash and each consumer's published cursor — never the book
hashes: the books that count are the ones a live feeder carries, and each feeder's hash says how
many it carries (`tokens`) and how many of them are synced (`synced`). So one call costs one read
per feeder whatever the number of books, and a book nobody carries any more (`retired`, expiring
after POLYBUS_RETIRED_TTL; or left behind by a feeder that was restarted with other tokens) never
turns the verdict red. Exit codes: 0 healthy, 1 unhealthy, 2 Redis unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from polybus.wire import keys
from polybus.wire.hashes import FeederHealth, decode_health, health_report
from polybus.wire.settings import bus_target


__all__ = ["Report", "check", "register", "writer_conflicts"]


@dataclass
class Report:
    """What `polybus health` found."""

    healthy: bool = True
    problems: list[str] = field(default_factory=list)
    feeders: dict[str, dict[str, Any]] = field(default_factory=dict)
    books: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, dict[str, str]] = field(default_factory=dict)

    def fail(self, problem: str) -> None:
        self.healthy = False
        self.problems.append(problem)


async def _scan(redis: aioredis.Redis, pattern: str) -> list[str]:
    # Feeder and consumer keys are few among 2 keys per token: large SCAN steps, few round trips.
    return [str(k) async for k in redis.scan_iter(match=pattern, count=10_000)]


async def check(
    redis: aioredis.Redis, prefix: str, max_silence: float, max_lag_ms: float
) -> Report:
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
    for problem in writer_conflicts(healths):
        report.fail(problem)
    carried = sum(health.tokens for health in live.values())
    synced = sum(health.synced for health in live.values())
    report.books = {"carried": carried, "synced": synced}
    if synced < carried:
        report.fail(f"{carried - synced} of {carried} carried books not synced")
    for key in sorted(await _scan(redis, keys.consumer_pattern(prefix))):
        info = {str(k): str(v) for k, v in (await redis.hgetall(key)).items()}
        name = key.split(":", 2)[-1]
        report.consumers[name] = info
        lag = float(info.get("lag_ms") or 0)
        if lag > max_lag_ms:
            report.fail(f"consumer {name} lags {lag / 1000:.1f}s")
    return report


def writer_conflicts(feeders: dict[str, FeederHealth]) -> list[str]:
    """Two feeders claiming the same tokens (one writer per token, docs/wire.md): a feeder
    refused tokens that another live feeder writes says so in its health hash."""
    problems = []
    for name, health in sorted(feeders.items()):
        if health.conflicts:
            problems.append(f"feeder {name} claims {health.conflicts} tokens that feeder(s) "
                            f"{health.conflict_with or '?'} already write")
    return problems


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
    redis = aioredis.Redis.from_url(target.redis_url, decode_responses=True,
                                    socket_connect_timeout=3)
    try:
        report = await check(redis, target.prefix, args.max_silence, args.max_lag * 1000)
    finally:
        await redis.aclose()
    if args.json:
        print(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2).decode())
    else:
        verdict = "healthy" if report.healthy else "UNHEALTHY"
        books = " ".join(f"{k}={v}" for k, v in report.books.items())
        print(
            f"{verdict}: feeders={len(report.feeders)} books: {books} "
            f"consumers={len(report.consumers)}"
        )
        for problem in report.problems:
            print(f"  - {problem}")
    return 0 if report.healthy else 1

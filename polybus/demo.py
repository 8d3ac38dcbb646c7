"""`polybus demo`: the whole pipeline on this machine, in one command.

A Redis, the simulator, the feeder on every simulator token, and a live view of the books in
Redis. With `--duration S` it stops after S seconds, prints one summary line and exits 0.

The Redis is a private server started for the demo and thrown away after it (never whatever
answers on localhost:6379, which may be someone's real bus), unless REDIS_URL is set (the
environment or .env). Then the demo writes under its prefix only if nothing is there yet, and
deletes every key under it when it ends: nothing is left behind in a server it did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from redis.exceptions import RedisError

from polybus.redisio import Client, connect
from polybus.wire import keys
from polybus.wire.hashes import BookField, BookHash
from polybus.wire.settings import bus_target


T = TypeVar("T")


__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the `demo` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run Redis + simulator + feeder + a live view on this machine"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds and print a summary (default: until Ctrl-C)",
    )
    p.add_argument("--markets", type=int, default=10, help="simulated markets (default 10)")
    p.add_argument("--rate", type=float, default=100.0, help="simulated actions/s (default 100)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no live view, only the summary")
    # --redis-url (REDIS_URL: a shared server instead of a private one) and --prefix come
    # from the console face
    p.set_defaults(func=run, uses_redis=True, log_level_default="warning")


async def run(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Run the demo; exit 0 when every book synced, 1 otherwise, 2 when it cannot start."""
    from polybus.redisproc import LocalRedis, private_redis

    target = bus_target(os.environ, redis_url=args.redis_url, prefix=args.prefix)
    url = target.redis_url if target.redis_url_given else ""
    try:
        # starting a private server blocks: in a thread, so that a stop signal is heard
        redis = LocalRedis(url, "REDIS_URL") if url else await asyncio.to_thread(private_redis)
    except RuntimeError as exc:
        print(f"polybus demo: {exc}", file=sys.stderr)
        return 2
    print(f"demo.redis url={redis.url} origin={redis.origin!r}", flush=True)
    try:
        if url:  # someone else's server: only an unused prefix, and clean it afterwards
            return await _in_shared_redis(args, stop, url, target.prefix)
        return await _demo(args, stop, redis.url, target.prefix)
    except (RedisError, OSError) as exc:
        from polybus.feeder.config import redact

        print(f"polybus demo: Redis at {redact(redis.url)} unreachable: {exc}", file=sys.stderr)
        return 2
    finally:
        redis.stop()


async def _in_shared_redis(
    args: argparse.Namespace, stop: asyncio.Event, url: str, prefix: str
) -> int:
    client = await connect(url, decode_responses=True, socket_connect_timeout=3)
    try:
        used = await _unless_stopped(stop, _keys_under(client, prefix))
        if used:
            print(
                f"polybus demo: REDIS_URL {url} already holds {len(used)} keys under prefix "
                f"{prefix!r} (e.g. {used[0]}); the demo cleans up after itself, so it only "
                "runs on an unused prefix: pass --prefix, or unset REDIS_URL for a private "
                "Redis",
                file=sys.stderr,
            )
            return 2
        try:
            return await _demo(args, stop, url, prefix)
        finally:
            await _delete_prefix(client, prefix)
    finally:
        await client.aclose()


async def _keys_under(client: Client, prefix: str) -> list[str]:
    return [k async for k in client.scan_iter(match=keys.prefix_pattern(prefix), count=1000)]


async def _unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result; a stop before it is done cancels it at once (nothing to clean yet)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise asyncio.CancelledError
    return task.result()


async def _delete_prefix(client: Client, prefix: str) -> None:
    """Delete every key under `prefix`: what the demo wrote into a server it did not start."""
    found = await _keys_under(client, prefix)
    for at in range(0, len(found), 500):
        await client.delete(*found[at : at + 500])


async def _demo(args: argparse.Namespace, stop: asyncio.Event, redis_url: str, prefix: str) -> int:
    from polybus.feeder.app import Feeder
    from polybus.feeder.config import FeederConfig
    from polybus.simulator import SimConfig, Simulator

    sim = Simulator(SimConfig(markets=args.markets, seed=args.seed, rate=args.rate))
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    tokens = sim.engine.tokens()
    print(
        f"demo.simulator ws_url={sim.ws_url} http_url={sim.http_url} tokens={len(tokens)}",
        flush=True,
    )
    config = FeederConfig(
        tokens=tuple(tokens),
        ws_url=sim.ws_url,
        redis_url=redis_url,
        prefix=prefix,
        feeder_id=f"demo-{os.getpid()}",
        connect_stagger=0.05,
        reconnect_base_delay=0.2,
        stats_interval=3600.0,
    )
    feeder = Feeder(config)
    for market in sim.engine.markets():
        feeder.describe(market.yes, question=market.question, outcome="Yes")
        feeder.describe(market.no, question=market.question, outcome="No")
    feeder_task = asyncio.create_task(feeder.run())
    client = await connect(redis_url, decode_responses=True)
    view = None if args.quiet else _View(client, prefix, tokens)
    started = time.monotonic()
    try:
        while not stop.is_set() and not feeder_task.done():
            elapsed = time.monotonic() - started
            if args.duration and elapsed >= args.duration:
                break
            if view is not None:
                await view.show(feeder.published / max(elapsed, 1e-9))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        if view is not None:
            view.close()
        elapsed = time.monotonic() - started
        statuses = [await client.hget(keys.book(t, prefix), BookField.STATUS) for t in tokens]
        synced = sum(s == "synced" for s in statuses)
        reconnects = sum(c.stats.reconnects for c in feeder.connections)
        print(
            f"demo.summary synced={synced}/{len(tokens)} events={feeder.published} "
            f"events_per_s={feeder.published / max(elapsed, 1e-9):.0f} "
            f"reconnects={reconnects} seconds={elapsed:.1f}",
            flush=True,
        )
        return 0 if synced == len(tokens) else 1
    finally:
        feeder.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(feeder_task, 10)
        await sim.stop()
        await client.aclose()


class _View:
    """The live view: `polybus top`'s table in place on a terminal, a rate line otherwise."""

    def __init__(self, client: Client, prefix: str, tokens: list[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.client, self.prefix, self.tokens = client, prefix, set(tokens)
        self.tty = sys.stdout.isatty()
        self.live = Live(console=Console(), refresh_per_second=4) if self.tty else None
        self.previous: dict[str, BookHash] = {}
        self.then = time.monotonic()

    async def show(self, rate: float) -> None:
        from polybus.consumers.top import rates, snapshot, table

        if self.live is None:
            print(f"events/s {rate:,.0f}   (Ctrl-C to stop)", flush=True)
            return
        rows, now = await snapshot(self.client, self.prefix), time.monotonic()
        rows = {t: r for t, r in rows.items() if t in self.tokens}  # a shared Redis has others
        per_s = rates(self.previous, rows, now - self.then)
        self.previous, self.then = rows, now
        self.live.update(table(rows, per_s, 40))
        if not self.live.is_started:
            self.live.start()

    def close(self) -> None:
        if self.live is not None and self.live.is_started:
            self.live.stop()

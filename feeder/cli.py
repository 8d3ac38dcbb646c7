"""`polybus feed`: run the feeder (DESIGN.md §5; fixed: --tokens --ws-url --redis-url --prefix).

`--redis-url`, `--prefix` and the log flags are added by the console face (polybus/cli.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from typing import Any

from polybus.wire.errors import ConfigError
from polybus.wire.settings import bus_target


__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the `feed` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "feed",
        help="keep the market channel and publish books and events to Redis",
        description="Keep Polymarket's market channel for the given tokens and publish every "
        "book and event to Redis. Flags win over env, env over .env, .env over defaults.",
    )
    p.add_argument("--tokens", help="token ids, comma separated (env POLYBUS_TOKENS)")
    p.add_argument(
        "--tokens-file",
        metavar="PATH",
        help="token ids, one per line, # comments (env POLYBUS_TOKENS_FILE); "
        "carried as well as --tokens",
    )
    p.add_argument("--ws-url", help="market channel URL (env WS_MARKET_URL)")
    p.add_argument("--feeder-id", help="health key id (env POLYBUS_FEEDER_ID, default host-pid)")
    p.add_argument(
        "--tokens-per-connection",
        type=int,
        help="shard size (env WS_TOKENS_PER_CONNECTION, default 200)",
    )
    p.add_argument(
        "--top", type=int, help="carry the N most active markets from Gamma (env POLYBUS_TOP)"
    )
    p.add_argument("--min-volume", type=float, help="minimum 24h volume for --top")
    p.add_argument("--gamma-url", help="Gamma API base (env GAMMA_URL)")
    p.add_argument("--clob-url", help="CLOB REST base (env CLOB_URL)")
    p.add_argument(
        "--record", metavar="FILE", help="record raw frames and connection events as JSONL (.gz ok)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics and /healthz here (env POLYBUS_METRICS_PORT)",
    )
    p.add_argument(
        "--metrics-host",
        help="address the metrics port binds (env POLYBUS_METRICS_HOST, default "
        "127.0.0.1; 0.0.0.0 exposes it)",
    )
    p.set_defaults(func=run, uses_redis=True, stop_grace=1.6)  # its STOP_BUDGET is 1.3 s


async def run(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Build the configuration, run the feeder until it ends or `stop` is set.

    0 when stopped (flushed, leases handed over, health key deleted), 1 when a connection gave
    up; a setting that can never work raises ConfigError (exit 2).
    """
    from polybus.feeder.app import Feeder
    from polybus.feeder.config import FeederConfig

    target = bus_target(os.environ, redis_url=args.redis_url, prefix=args.prefix)
    config = FeederConfig.from_env(
        tokens=args.tokens,
        tokens_file=args.tokens_file,
        ws_url=args.ws_url,
        redis_url=target.redis_url,
        prefix=target.prefix,
        feeder_id=args.feeder_id,
        tokens_per_connection=args.tokens_per_connection,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        top=args.top,
        min_volume=args.min_volume,
        gamma_url=args.gamma_url,
        clob_url=args.clob_url,
        record=args.record,
    )
    if not config.tokens and not config.top:
        raise ConfigError("no tokens: pass --tokens ID[,ID…] (POLYBUS_TOKENS) or --top N")
    feeder = Feeder(config)
    stopping = asyncio.create_task(_stop_when(stop, feeder.stop))
    try:
        code: int = await feeder.run()
    finally:
        stopping.cancel()
    return code


async def _stop_when(stop: asyncio.Event, graceful: Callable[[], None]) -> None:
    await stop.wait()
    graceful()

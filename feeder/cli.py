"""`polybus feed`: run the feeder (DESIGN.md §5; fixed: --tokens --ws-url --redis-url --prefix)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from polybus.wire.errors import ConfigError, WriterConflict


__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the `feed` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "feed", help="keep the market channel and publish books and events to Redis",
        description="Keep Polymarket's market channel for the given tokens and publish every "
        "book and event to Redis. Flags win over env, env over .env, .env over defaults.",
    )
    p.add_argument("--tokens", help="token ids, comma separated (env POLYBUS_TOKENS)")
    p.add_argument("--tokens-file", metavar="PATH",
                   help="token ids, one per line, # comments (env POLYBUS_TOKENS_FILE); "
                   "carried as well as --tokens")
    p.add_argument("--ws-url", help="market channel URL (env WS_MARKET_URL)")
    p.add_argument("--redis-url", help="Redis URL (env REDIS_URL)")
    p.add_argument("--prefix", help="key prefix (env POLYBUS_PREFIX, default pm)")
    p.add_argument("--feeder-id", help="health key id (env POLYBUS_FEEDER_ID, default host-pid)")
    p.add_argument("--tokens-per-connection", type=int,
                   help="shard size (env WS_TOKENS_PER_CONNECTION, default 200)")
    p.add_argument("--top", type=int,
                   help="carry the N most active markets from Gamma (env POLYBUS_TOP)")
    p.add_argument("--min-volume", type=float, help="minimum 24h volume for --top")
    p.add_argument("--gamma-url", help="Gamma API base (env GAMMA_URL)")
    p.add_argument("--clob-url", help="CLOB REST base (env CLOB_URL)")
    p.add_argument("--record", metavar="FILE",
                   help="record raw frames and connection events as JSONL (.gz ok)")
    p.add_argument("--metrics-port", type=int,
                   help="serve Prometheus /metrics and /healthz here (env POLYBUS_METRICS_PORT)")
    p.add_argument("--metrics-host",
                   help="address the metrics port binds (env POLYBUS_METRICS_HOST, default "
                   "127.0.0.1; 0.0.0.0 exposes it)")
    p.add_argument("--log-level", default=None, help="debug|info|warning (env POLYBUS_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["json", "console"], default=None,
                   help="default: console on a terminal, json otherwise")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the configuration, run the feeder, return its exit code.

    0 when stopped by SIGTERM/SIGINT, 1 when a connection gave up, 2 for a setting that can
    never work (one line naming it), 3 when another live feeder writes these tokens.
    """
    from polybus.feeder.app import Feeder
    from polybus.feeder.config import FeederConfig
    from polybus.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    try:
        config = FeederConfig.from_env(
            tokens=args.tokens, tokens_file=args.tokens_file, ws_url=args.ws_url,
            redis_url=args.redis_url, prefix=args.prefix,
            feeder_id=args.feeder_id, tokens_per_connection=args.tokens_per_connection,
            metrics_port=args.metrics_port, metrics_host=args.metrics_host, top=args.top,
            min_volume=args.min_volume,
            gamma_url=args.gamma_url, clob_url=args.clob_url, record=args.record,
        )
        if not config.tokens and not config.top:
            raise ConfigError("no tokens: pass --tokens ID[,ID…] (POLYBUS_TOKENS) or --top N")
        return asyncio.run(_serve(Feeder(config)))
    except ConfigError as exc:
        print(f"polybus feed: {exc}", file=sys.stderr)
        return 2
    except WriterConflict as exc:
        print(f"polybus feed: {exc}", file=sys.stderr)
        return 3


async def _serve(feeder: Any) -> int:
    """Run the feeder with SIGTERM/SIGINT meaning: flush, delete the health key, exit 0."""
    from polybus.stopping import on_stop

    on_stop(feeder.stop, grace=1.6)  # the feeder's own STOP_BUDGET is 1.3 s
    code: int = await feeder.run()
    return code

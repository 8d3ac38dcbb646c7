"""`polybus record [--tokens ID,…] OUT`: dump what Redis holds into a stream file.

Each token's book hash at the start, then its stream entries as they arrive, until
SIGINT/SIGTERM or `--duration S`. Without `--tokens`, every token with a book under the
prefix. `polybus replay OUT` puts it back into Redis (polybus/streamrec.py has the format).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from polybus.feeder.config import parse_tokens
from polybus.redisio import REDIS_OR_OS_ERRORS, Client, connect
from polybus.wire.errors import ConfigError
from polybus.wire.settings import bus_target


__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the `record` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "record",
        help="record books and stream entries from Redis into a replayable file",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("out", help="output file (.jsonl, or .jsonl.gz to compress)")
    p.add_argument("--tokens", help="token ids, comma separated (default: every book)")
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    p.set_defaults(func=run, uses_redis=True, log_level_default="warning")


async def run(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Record until `--duration` or stopped; 2 for bad flags (ConfigError) or a Redis
    unreachable at the start, 1 when Redis fails later."""
    tokens = list(parse_tokens(args.tokens)) if args.tokens else []
    if args.duration < 0:
        raise ConfigError("--duration must be >= 0")
    return await _record(args, stop, tokens)


async def _record(args: argparse.Namespace, stop: asyncio.Event, tokens: list[str]) -> int:
    target = bus_target(os.environ, redis_url=args.redis_url, prefix=args.prefix)
    # unreachable now is a setting to fix (exit 2), not a failure
    redis = await connect(target.redis_url, decode_responses=True, socket_connect_timeout=2)
    try:
        return await _record_from(redis, target.prefix, args, stop, tokens)
    finally:
        await redis.aclose()


async def _record_from(
    redis: Client,
    prefix: str,
    args: argparse.Namespace,
    stop: asyncio.Event,
    tokens: list[str],
) -> int:
    from polybus.replay.streamrec import all_tokens, record_streams

    try:
        tokens = tokens or await all_tokens(redis, prefix)
        if not tokens:
            print(
                f"polybus record: no books under prefix {prefix!r}; pass --tokens", file=sys.stderr
            )
            return 2
        result = await record_streams(
            redis, args.out, tokens, prefix=prefix, duration=args.duration, stop=stop
        )
    except REDIS_OR_OS_ERRORS as exc:
        print(f"polybus record: {exc}", file=sys.stderr)
        return 1
    print(
        f"record.done tokens={result.tokens} entries={result.entries} path={args.out}", flush=True
    )
    return 0

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

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from polybus.feeder.config import parse_tokens
from polybus.stopping import on_stop
from polybus.wire import keys
from polybus.wire.errors import ConfigError


__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the `record` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "record", help="record books and stream entries from Redis into a replayable file",
        description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("out", help="output file (.jsonl, or .jsonl.gz to compress)")
    p.add_argument("--tokens", help="token ids, comma separated (default: every book)")
    p.add_argument("--redis-url", help="Redis URL (env REDIS_URL)")
    p.add_argument("--prefix", help="key prefix (env POLYBUS_PREFIX, default pm)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Record; 2 for bad flags, 1 when Redis fails."""
    from polybus.logs import configure_logging

    configure_logging(os.environ.get("POLYBUS_LOG_LEVEL", "warning"), None)
    try:
        tokens = list(parse_tokens(args.tokens)) if args.tokens else []
    except ConfigError as exc:
        print(f"polybus record: {exc}", file=sys.stderr)
        return 2
    if args.duration < 0:
        print("polybus record: --duration must be >= 0", file=sys.stderr)
        return 2
    return asyncio.run(_record(args, tokens))


async def _record(args: argparse.Namespace, tokens: list[str]) -> int:
    from polybus.replay.streamrec import all_tokens, record_streams

    url = args.redis_url or os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
    prefix = args.prefix or os.environ.get("POLYBUS_PREFIX") or keys.DEFAULT_PREFIX
    redis = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2)
    stop = asyncio.Event()
    on_stop(stop.set)  # SIGTERM/SIGINT: stop, and within 2 s whatever it awaits
    try:
        tokens = tokens or await all_tokens(redis, prefix)
        if not tokens:
            print(f"polybus record: no books under prefix {prefix!r}; pass --tokens",
                  file=sys.stderr)
            return 2
        result = await record_streams(redis, args.out, tokens, prefix=prefix,
                                      duration=args.duration, stop=stop)
    except (RedisError, OSError) as exc:
        print(f"polybus record: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    print(f"record.done tokens={result.tokens} entries={result.entries} path={args.out}",
          flush=True)
    return 0

"""`polybus replay FILE`: a recorded session, back through the real code.

    polybus replay session.jsonl.gz --redis-url redis://… --prefix replay   # into Redis
    polybus replay session.jsonl.gz --serve 8766       # as an exchange for `polybus feed`

Raw recordings (`polybus feed --record`) go through the feeder's normalizer, mirror and
publisher into Redis, or out of `--serve PORT` as an exchange-like market channel; stream
files (`polybus record`) go back into Redis. `--speed 1|10|max` scales the recorded pacing;
`--from/--to` take Unix seconds, milliseconds or ISO-8601. The default prefix is `replay`,
and a prefix that already holds books is refused without `--clear`: live data is never
clobbered. See polybus/redisreplay.py and polybus/serve.py for the exact rules.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from polybus.feeder.config import redact
from polybus.redisio import REDIS_OR_OS_ERRORS, Client, connect
from polybus.replay.pacing import Progress
from polybus.replay.sessions import SessionError, detect_format, parse_speed, parse_time, summarize
from polybus.wire.errors import BackendError, InvalidToken
from polybus.wire.settings import bus_target


__all__ = ["register", "run"]

DEFAULT_PREFIX = "replay"

_LOST: tuple[type[Exception], ...] = (*REDIS_OR_OS_ERRORS, BackendError)
"""A Redis (or its cluster) failing mid-replay: exit 1."""


def register(subparsers: Any) -> None:
    """Add the `replay` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="replay a recorded session into Redis or as an exchange (--serve)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("file", help="a raw recording (feed --record) or a stream file (record)")
    p.add_argument("--speed", default="max", help="1 (recorded pace), 10, …, or max (default)")
    p.add_argument(
        "--from",
        dest="start",
        metavar="T",
        help="start at T (Unix s/ms, or ISO-8601; UTC unless a zone is given)",
    )
    p.add_argument("--to", dest="end", metavar="T", help="stop after T")
    p.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        help="serve a raw recording at ws://HOST:PORT/ws/market instead",
    )
    p.add_argument("--host", default="127.0.0.1", help="--serve address (default 127.0.0.1)")
    p.add_argument(
        "--no-drops",
        action="store_true",
        help="--serve: do not reproduce recorded connection drops",
    )
    p.add_argument(
        "--exit-when-done",
        action="store_true",
        help="--serve: exit once every frame was sent (default: stay up)",
    )
    p.add_argument(
        "--prefix",
        default=None,
        help=f"key prefix to replay into (default {DEFAULT_PREFIX!r}, never env)",
    )
    p.add_argument(
        "--clear",
        action="store_true",
        help="delete the prefix's books and streams first (else refuse a used prefix)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    # --redis-url comes from the console face; --prefix is this command's own (never env)
    p.set_defaults(func=run, uses_redis=True, log_level_default="warning")


async def run(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Check the flags, then replay; 2 for bad input or a Redis unreachable at the start,
    1 when Redis fails later."""
    try:
        speed = parse_speed(args.speed)
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
        if start is not None and end is not None and end < start:
            raise SessionError("--to is before --from")
        fmt = detect_format(args.file)
        if args.serve is not None and fmt != "raw":
            raise SessionError("--serve replays raw recordings; a stream file goes into Redis")
        total, first, last = summarize(args.file, fmt)
        if start is not None and total and start > last:
            raise SessionError(f"--from is after the recording ends ({last} µs)")
        progress = Progress(
            total,
            max(0, min(end or last, last) - max(start or first, first)),
            speed,
            enabled=not args.quiet,
        )
        if args.serve is not None:
            return await _serve(args, stop, speed, start, end, progress)
        return await _into_redis(args, speed, start, end, progress)
    except SessionError as exc:
        print(f"polybus replay: {exc}", file=sys.stderr)
        return 2


async def _into_redis(
    args: argparse.Namespace, speed: float, start: int | None, end: int | None, progress: Progress
) -> int:
    url = bus_target(os.environ, redis_url=args.redis_url).redis_url
    # unreachable now is a setting to fix (exit 2), not a failure
    redis = await connect(url, decode_responses=True, socket_connect_timeout=2)
    try:
        return await _replay_into(redis, redact(url), args, speed, start, end, progress)
    finally:
        await redis.aclose()


async def _replay_into(
    redis: Client,
    shown_url: str,
    args: argparse.Namespace,
    speed: float,
    start: int | None,
    end: int | None,
    progress: Progress,
) -> int:
    from polybus.replay.into_redis import replay_into_redis

    prefix = args.prefix or DEFAULT_PREFIX
    try:
        result = await replay_into_redis(
            args.file,
            redis,
            prefix=prefix,
            speed=speed,
            start=start,
            end=end,
            progress=progress,
            clear=args.clear,
        )
    except _LOST as exc:
        print(f"polybus replay: redis {shown_url}: {exc}", file=sys.stderr)
        return 1
    except InvalidToken as exc:
        raise SessionError(str(exc)) from exc
    print(
        f"replay.done lines={result.lines} published={result.published} "
        f"seconds={result.seconds:.3f} events_per_s={result.rate:.0f} prefix={prefix}",
        flush=True,
    )
    return 0


async def _serve(
    args: argparse.Namespace,
    stop: asyncio.Event,
    speed: float,
    start: int | None,
    end: int | None,
    progress: Progress,
) -> int:
    from polybus.replay.serve import ReplayServer

    server = ReplayServer(
        args.file, speed=speed, start=start, end=end, drops=not args.no_drops, progress=progress
    )
    try:
        await server.start(args.host, args.serve)
    except OSError as exc:
        print(f"polybus replay: cannot listen on {args.host}:{args.serve}: {exc}", file=sys.stderr)
        return 1
    print(f"replay.serving ws_url={server.url}", flush=True)
    done = asyncio.create_task(server.done.wait())
    stopped = asyncio.create_task(stop.wait())
    waiting = {done, stopped}
    while waiting:
        finished, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if done in finished:
            print(
                f"replay.done lines={server.lines} frames={server.sent} "
                f"seconds={server.seconds:.3f} frames_per_s={server.rate:.0f}",
                flush=True,
            )
            if args.exit_when_done:
                break
        if stopped in finished:
            break
    for task in waiting:
        task.cancel()
    await server.stop()
    return 0

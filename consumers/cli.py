"""`polybus tail` (one decoded line per event) and `polybus book TOKEN` (a book from Redis)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from polybus.consumers.format import age, entry_line, short
from polybus.consumers.moved import MovedWatch, read_each
from polybus.consumers.redisio import classify, text
from polybus.consumers.writers import verdicts
from polybus.redisio import Client, connect, on_cluster
from polybus.wire import hashes, keys
from polybus.wire.codec import decode
from polybus.wire.maintained import Verdict
from polybus.wire.settings import bus_target


__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add `tail`, `book` and `top` (`--redis-url`/`--prefix` come from the console face)."""
    tail = subparsers.add_parser("tail", help="print one decoded line per event from Redis")
    tail.add_argument("--tokens", default=None, help="comma separated (default: every stream)")
    tail.add_argument("--from-start", action="store_true", help="from the oldest kept entry")
    tail.add_argument("--count", type=int, default=0, help="exit after this many lines")
    tail.set_defaults(func=run_tail, **_READS_REDIS)
    book = subparsers.add_parser("book", help="print a token's book from Redis, best first")
    book.add_argument("token")
    book.add_argument("--depth", type=int, default=10)
    book.set_defaults(func=run_book, **_READS_REDIS)
    top = subparsers.add_parser("top", help="a live table of the books in Redis")
    top.add_argument("--rows", type=int, default=30)
    top.add_argument("--once", action="store_true", help="print the table once and exit")
    top.set_defaults(func=run_top, **_READS_REDIS)


_READS_REDIS: dict[str, Any] = {"uses_redis": True, "log_level_default": "warning"}
"""Tools that print data: only warnings log (on stderr)."""


async def _client(args: argparse.Namespace) -> tuple[Client, str]:
    """A client for `--redis-url` (a single server or any node of a cluster: the server is
    asked) and the prefix."""
    target = bus_target(os.environ, redis_url=args.redis_url, prefix=args.prefix)
    # backslashreplace: a non-UTF-8 byte in Redis is shown escaped, never a crash
    client = await connect(
        target.redis_url,
        decode_responses=True,
        encoding_errors="backslashreplace",
        socket_connect_timeout=3,
    )
    return client, target.prefix


async def run_tail(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Print one line per entry until `--count` lines, or until stopped."""
    return await _tail(args, stop)


async def _tail(args: argparse.Namespace, stop: asyncio.Event) -> int:
    redis, prefix = await _client(args)
    if args.tokens:
        tokens = [keys.validate_token(t.strip()) for t in args.tokens.split(",") if t.strip()]
        streams = {keys.stream(t, prefix): "0-0" if args.from_start else "$" for t in tokens}
    else:
        found = [k async for k in redis.scan_iter(keys.stream_pattern(prefix), count=1000)]
        streams = {k: "0-0" if args.from_start else "$" for k in found}
    if not streams:
        print("polybus tail: no streams found (is a feeder running? --prefix?)", file=sys.stderr)
        await redis.aclose()
        return 1
    printed = 0
    moved = MovedWatch(prefix, block_ms=500)
    try:
        await _resolve_newest(redis, streams)
        while not stop.is_set() and streams:
            for key, entries in await _next(redis, streams, moved):
                token = keys.token_of(text(key))
                for entry_id, fields in entries:
                    streams[text(key)] = text(entry_id)
                    print(_line(token, text(entry_id), fields), flush=True)
                    printed += 1
                    if args.count and printed >= args.count:
                        return 0
        if not streams:
            print("polybus tail: no stream left to follow", file=sys.stderr)
            return 1
    finally:
        await moved.close()
        await redis.aclose()
    return 0


def _line(token: str, entry_id: str, fields: dict[Any, Any]) -> str:
    try:
        return entry_line(token, decode(fields, token, entry_id))
    except Exception as exc:  # DecodeError, or whatever garbage provokes
        return f"{short(token)} {entry_id} undecodable: {exc!r}"


async def _resolve_newest(redis: Client, streams: dict[str, str]) -> None:
    """On a cluster, `$` (from now) becomes each stream's newest id: there, streams are read
    without blocking (one XREAD names one slot), and `$` would never yield anything."""
    if not on_cluster(redis):
        return
    newest = [k for k, cursor in streams.items() if cursor == "$"]
    pipe = redis.pipeline(transaction=False)
    for key in newest:
        pipe.xrevrange(key, count=1)
    for key, reply in zip(newest, await pipe.execute(), strict=True):
        streams[key] = reply[0][0] if reply else "0-0"


async def _next(redis: Client, streams: dict[str, str], moved: MovedWatch) -> list[Any]:
    """The next entries: one blocking XREAD over every stream; on a cluster, the streams the
    feeders' notices name (moved.py), one XREAD each in one pipeline."""
    if not on_cluster(redis):
        reply: Any = await redis.xread(streams, count=500, block=500)  # type: ignore[arg-type]
        return list(reply or [])
    by_token = {keys.token_of(k): k for k in streams}
    news = await moved.wait(redis, by_token, 500)
    chosen = streams if news is None else {by_token[t]: streams[by_token[t]] for t in news}
    entries, errors = await read_each(redis, chosen, 500)
    lost: BaseException | None = None
    for key, exc in errors.items():
        if classify(exc) == "lost":  # a node failing over, say: read it again next time
            lost = exc
            continue
        print(f"polybus tail: {key}: {exc} (no longer followed)", file=sys.stderr)
        streams.pop(key, None)  # not a stream, or an ACL: it will not get better
    if lost is not None:
        print(f"polybus tail: {len(errors)} streams unreadable, retrying: {lost}", file=sys.stderr)
        await asyncio.sleep(0.2)
    return entries


def writer_line(verdict: Verdict) -> str:
    """Who maintains this book, by the one rule (wire/maintained.py): `maintained: writer a
    holds lease p3 fence 7`, `handover: …`, `unmaintained: no live lease …`."""
    return f"{verdict.state}: {verdict.reason}"


def book_lines(
    token: str, fields: dict[str, str], depth: int, verdict: Verdict | None = None
) -> list[str]:
    """The text `polybus book` prints for one hash (and the verdict on who maintains it);
    garbage in the hash is left out (wire/hashes.py `read_book`), never a crash."""
    if not fields:
        return [f"{short(token)}: no book in Redis (not carried by a feeder yet?)"]
    b = hashes.read_book(fields)
    title = " — ".join(x for x in (b.question, b.outcome) if x)
    lines = [
        f"{token}" + (f"  {title}" if title else ""),
        f"status {b.status or '?'}  age {age(b.ts)}  "
        f"seq {'?' if b.seq is None else b.seq}  last_id {b.last_id or '-'}  "
        f"tick {b.tick_size or '-'}" + (f"  {writer_line(verdict)}" if verdict is not None else ""),
        f"last trade {b.last_trade_side} {b.last_trade_size} @ {b.last_trade_price or '-'}",
        f"{'bid size':>12} {'bid':>8} | {'ask':<8} {'ask size':<12}",
    ]
    bids, asks = b.bids, b.asks
    for i in range(min(depth, max(len(bids), len(asks)))):
        bid = f"{bids[i][1]:>12} {bids[i][0]:>8}" if i < len(bids) else " " * 21
        ask = f"{asks[i][0]:<8} {asks[i][1]:<12}" if i < len(asks) else ""
        lines.append(f"{bid} | {ask}")
    return lines


async def _book(args: argparse.Namespace) -> int:
    token = keys.validate_token(args.token)  # a bad argument is refused before connecting
    redis, prefix = await _client(args)
    try:
        fields: dict[str, str] = await redis.hgetall(keys.book(token, prefix))  # type: ignore[assignment]
        # a book is only as good as its writer: does it still hold the token's lease?
        verdict = (await verdicts(redis, prefix, {token: fields}))[token] if fields else None
    finally:
        await redis.aclose()
    print("\n".join(book_lines(token, fields, args.depth, verdict)))
    return 0 if fields else 1


async def run_book(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Print one book; 1 when Redis has none."""
    return await _book(args)


async def run_top(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """The live table until stopped (or printed once)."""
    from polybus.consumers.top import top

    redis, prefix = await _client(args)
    return await top(redis, prefix, rows=args.rows, once=args.once, stop=stop)

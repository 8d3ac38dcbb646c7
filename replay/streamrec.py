"""Stream recording: what Redis holds for some tokens, as a file that replays on its own.

The file (JSONL, gzip for `.gz`): a header line, then per token a `hash` line (its book hash
as HGETALL returned it), then `entry` lines as XREAD delivers them, starting at each hash's
`last_id` — the contract's late-join rule, so the file is gap-free: the hash plus every entry
after it is the whole history from that moment on. What was read is flushed every
`FLUSH_INTERVAL` seconds (a `.gz` as complete gzip members), so a killed recording replays up to
its last flush.

    {"kind": "header", "format": "polybus-stream", "version": 1, "prefix": "pm",
     "tokens": […], "t": µs}
    {"kind": "hash", "token": "…", "fields": {…}}
    {"kind": "entry", "token": "…", "id": "1791201600123-0", "fields": {…}}
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from redis.asyncio.cluster import RedisCluster

from polybus.feeder.recorder import FLUSH_INTERVAL, GzipMembers
from polybus.redisio import Client, on_cluster
from polybus.replay.sessions import STREAM_FORMAT, open_write
from polybus.wire import keys
from polybus.wire.hashes import read_book


__all__ = ["RecordResult", "all_tokens", "record_streams"]

READ_COUNT = 1000

CLUSTER_POLL = 0.05
"""On a cluster, seconds between two reads that found nothing (see `_fetch`)."""


@dataclass
class RecordResult:
    """What a recording wrote."""

    tokens: int = 0
    entries: int = 0


async def all_tokens(redis: Client, prefix: str) -> list[str]:
    """Every token that has a book hash under `prefix`, sorted."""
    found = [
        keys.token_of(k) async for k in redis.scan_iter(match=keys.book_pattern(prefix), count=1000)
    ]
    return sorted(set(found))


Out = IO[bytes] | GzipMembers


def _write(f: Out, item: dict[str, Any]) -> None:
    f.write(orjson.dumps(item) + b"\n")


async def record_streams(
    redis: Client,
    path: str | Path,
    tokens: list[str],
    *,
    prefix: str = keys.DEFAULT_PREFIX,
    duration: float = 0.0,
    stop: asyncio.Event | None = None,
    block_ms: int = 200,
) -> RecordResult:
    """Record until `stop` is set or `duration` seconds (0 = no limit) have passed."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration if duration > 0 else float("inf")
    result = RecordResult(tokens=len(tokens))
    cursors: dict[str, str] = {}
    with open_write(path) as f:
        _write(
            f,
            {
                "kind": "header",
                "format": STREAM_FORMAT,
                "version": 1,
                "prefix": prefix,
                "tokens": tokens,
                "t": time.time_ns() // 1000,
            },
        )
        for token in tokens:
            fields: dict[str, str] = await redis.hgetall(keys.book(token, prefix))  # type: ignore[assignment]
            _write(f, {"kind": "hash", "token": token, "fields": fields})
            cursors[keys.stream(token, prefix)] = read_book(fields).last_id or "0-0"
        f.flush()
        flush_at = loop.time() + FLUSH_INTERVAL
        while not stop.is_set() and loop.time() < deadline:
            wait_ms = int(min(block_ms, max(1.0, (deadline - loop.time()) * 1000)))
            result.entries += await _read(redis, cursors, f, wait_ms)
            if loop.time() >= flush_at:  # a kill loses at most this interval (and a .gz stays
                f.flush()  # valid: each flush writes a complete gzip member)
                flush_at = loop.time() + FLUSH_INTERVAL
        while got := await _read(redis, cursors, f, None):  # what arrived before the stop
            result.entries += got
    return result


async def _read(redis: Client, cursors: dict[str, str], f: Out, block_ms: int | None) -> int:
    """One read of every stream; entries written, cursors moved; returns how many."""
    count = 0
    for key, entries in await _fetch(redis, cursors, block_ms):
        token = keys.token_of(key)
        for entry_id, fields in entries:
            _write(f, {"kind": "entry", "token": token, "id": entry_id, "fields": fields})
        count += len(entries)
        cursors[key] = entries[-1][0]
    return count


async def _fetch(redis: Client, cursors: dict[str, str], block_ms: int | None) -> list[Any]:
    """[(stream, entries)] of the streams with entries after their cursor: one XREAD over
    every stream, blocking up to `block_ms` (None: not at all)."""
    if on_cluster(redis):
        return await _fetch_cluster(redis, cursors, block_ms)
    replies: Any = await redis.xread(cursors, count=READ_COUNT, block=block_ms)  # type: ignore[arg-type]
    return list(replies or [])


async def _fetch_cluster(
    redis: RedisCluster, cursors: dict[str, str], block_ms: int | None
) -> list[Any]:
    """`_fetch` on a cluster, where one XREAD may only name streams of one slot, and a
    blocking XREAD per stream would hold a connection per token: one pipeline of
    non-blocking XREADs instead (redis-py sends one round trip per primary, at once), and a
    pause of CLUSTER_POLL when nothing came. Each XREAD names its node: left to find it,
    redis-py asks the server (COMMAND GETKEYS) twice per XREAD, one by one."""
    await redis.initialize()  # the slot map get_node_from_key reads (a no-op once known)
    pipe = redis.pipeline(transaction=False)
    for key, cursor in cursors.items():
        node = redis.get_node_from_key(key)
        pipe.execute_command(
            "XREAD", "COUNT", READ_COUNT, "STREAMS", key, cursor, target_nodes=node
        )
    replies = [stream for reply in await pipe.execute() for stream in reply or []]
    if not replies and block_ms:
        await asyncio.sleep(min(CLUSTER_POLL, block_ms / 1000))
    return replies

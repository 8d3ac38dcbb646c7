"""Replay a session file into Redis through the feeder's real Outbox/Batch/Publisher/Lua step.

Raw files go through `RawFolder` (the feeder's Normalizer and Mirror); stream files are
decoded with the wire codec and re-published entry by entry, so either way every entry is
written by feeder/publish.lua: seq contiguous per token, `last_id` linked, one atomic step per
token per batch. Only the prefix's own keys are touched, and a prefix that already holds data
is refused unless `clear=True` (live data is never clobbered).

`--from T`: lines before T are still replayed, unpaced, so every book hash is exact at T; then
every stream of the prefix is trimmed to nothing (XTRIM MAXLEN 0). The streams then hold only
entries from T on, their seq continuing — exactly what a MAXLEN-trimmed live stream looks like,
so a consumer that reads the hash and then XREADs from its `last_id` is served correctly.
`--to T`: replay stops before the first line after T.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from polybus.feeder.outbox import Batch, Outbox
from polybus.feeder.publisher import Publisher
from polybus.redisio import Client
from polybus.replay.pacing import Pacer, Progress
from polybus.replay.rawfold import OutboxSink, RawFolder
from polybus.replay.sessions import (
    STREAM_FORMAT,
    SessionError,
    detect_format,
    line_time,
    read_lines,
)
from polybus.wire import keys
from polybus.wire.codec import decode
from polybus.wire.errors import DecodeError
from polybus.wire.hashes import read_book, replay_start


__all__ = ["BATCH", "ReplayResult", "prepare_prefix", "replay_into_redis"]

log = structlog.get_logger("polybus.replay.cli")

BATCH = 2000
"""Entries per Publisher round trip when replaying flat out."""


@dataclass
class ReplayResult:
    """What a replay did."""

    lines: int = 0
    published: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Published entries per second."""
        return self.published / self.seconds if self.seconds > 0 else 0.0


async def _scan(redis: Client, prefix: str) -> list[str]:
    found: list[str] = []
    for pattern in (keys.book_pattern(prefix), keys.stream_pattern(prefix)):
        found += [k async for k in redis.scan_iter(match=pattern, count=1000)]
    for key in (keys.markets(prefix), keys.quarantine(prefix)):
        if await redis.exists(key):
            found.append(key)
    return found


async def prepare_prefix(redis: Client, prefix: str, clear: bool) -> None:
    """Refuse a prefix that holds books or streams, or delete them when `clear`."""
    found = await _scan(redis, prefix)
    if found and not clear:
        raise SessionError(
            f"prefix {prefix!r} already holds {len(found)} keys (e.g. "
            f"{found[0]}); pick another --prefix or pass --clear"
        )
    for at in range(0, len(found), 500):
        # on a cluster, redis-py splits a DEL of many keys into one DEL per slot (a pipeline)
        await redis.delete(*found[at : at + 500])


class _Writer:
    """Outbox → Publisher, counting what was written."""

    def __init__(self, redis: Client, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.outbox = Outbox(capacity=1 << 62)
        self.publisher = Publisher(redis, prefix=prefix)
        self.published = 0
        self._pending: asyncio.Task[None] | None = None

    async def flush(self) -> None:
        """Start writing what is queued; the previous write must have finished first.

        One write stays in flight while the caller folds the next lines: Redis runs the Lua
        steps in its own process meanwhile (the yield below lets the pipeline go out).
        """
        await self.drain()
        batch = self.outbox.take_nowait()
        if batch.size:
            self._pending = asyncio.create_task(self.write(batch))
            await asyncio.sleep(0)

    async def drain(self) -> None:
        """Wait for the write in flight (raises what it raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def write(self, batch: Batch) -> None:
        if batch.size:
            broken = await self.publisher.write(batch)
            if broken:  # only if something else writes the same prefix meanwhile
                log.warning("replay.continuity_lost", tokens=broken[:5])
            self.published += batch.size

    async def trim(self) -> None:
        """The --from cut: empty every stream of the prefix; hashes stay as they are."""
        await self.drain()
        pattern = keys.stream_pattern(self.prefix)
        streams = [k async for k in self.redis.scan_iter(match=pattern, count=1000)]
        for key in [*streams, keys.markets(self.prefix), keys.quarantine(self.prefix)]:
            await self.redis.xtrim(key, maxlen=0, approximate=False)


async def replay_into_redis(
    path: str | Path,
    redis: Client,
    *,
    prefix: str = keys.DEFAULT_PREFIX,
    speed: float = 0.0,
    start: int | None = None,
    end: int | None = None,
    progress: Progress | None = None,
    clear: bool = False,
) -> ReplayResult:
    """Replay a raw or stream session file into `redis` under `prefix`."""
    fmt = detect_format(path)
    await prepare_prefix(redis, prefix, clear)
    writer = _Writer(redis, prefix)
    if fmt == "raw":
        folder = RawFolder(OutboxSink(writer.outbox))
        apply = folder.feed
    else:
        apply = _StreamApplier(writer).feed
    pacer, result = Pacer(speed), ReplayResult()
    started = time.perf_counter()
    cut, t0 = start is None, 0
    for line, t in _timed(path, fmt):
        if t is not None and end is not None and t > end:
            break
        if not cut and t is not None and t >= start:  # type: ignore[operator]
            await writer.flush()
            await writer.trim()
            cut, writer.published = True, 0
        if cut and t is not None:
            pause = pacer.delay(t)
            if pause > 0:
                await writer.flush()
                await asyncio.sleep(pause)
        if fmt == "stream" and line.get("kind") == "hash":
            await writer.flush()  # hashes are written directly: keep them after earlier entries
            await writer.drain()
            await _write_hash(redis, prefix, line)
        apply(line)
        result.lines += 1
        if len(writer.outbox) >= BATCH:
            await writer.flush()
        if progress is not None and cut and t is not None:
            t0 = t0 or t
            progress.update(result.lines, writer.published, t - t0)
    await writer.flush()
    await writer.drain()
    if not cut:  # --from after the last line: the books are as the recording ended
        await writer.trim()
        writer.published = 0
    result.published, result.seconds = writer.published, time.perf_counter() - started
    if progress is not None:
        progress.update(result.lines, result.published, progress.span_us, final=True)
    return result


def _timed(path: str | Path, fmt: str) -> Iterator[tuple[dict[str, Any], int | None]]:
    for line in read_lines(path):
        yield line, line_time(line, fmt)  # type: ignore[arg-type]


async def _write_hash(redis: Client, prefix: str, line: dict[str, Any]) -> None:
    """A recorded book hash, as the start of its token's replayed stream.

    `seq` is kept, so the Lua step numbers the replayed entries exactly as recorded; `last_id`
    becomes `0-0`: the new stream holds none of the entries folded into this hash, and every
    entry it will hold comes after it (wire/hashes.py `replay_start`).
    """
    token = keys.validate_token(str(line.get("token", "")))
    fields = line.get("fields") or {}
    if not isinstance(fields, dict):
        raise SessionError(f"hash line of {token} has no fields object")
    if fields:
        mapping = replay_start(fields)
        await redis.hset(keys.book(token, prefix), mapping=mapping)  # type: ignore[arg-type]


class _StreamApplier:
    """Stream-file lines into the outbox: entries are decoded, then re-encoded by the Batch."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer
        self.gaps = 0
        self._seq: dict[str, int] = {}

    def feed(self, line: dict[str, Any]) -> None:
        kind = line.get("kind")
        if kind == "header":
            if line.get("format") != STREAM_FORMAT:
                raise SessionError("not a polybus stream file")
            return
        if kind == "hash":
            token = str(line.get("token", ""))
            fields = line.get("fields")
            self._seq[token] = (read_book(fields).seq if isinstance(fields, dict) else None) or 0
            return
        if kind != "entry":
            return
        token = str(line.get("token", ""))
        try:
            entry = decode(
                line.get("fields") or {}, keys.validate_token(token), str(line.get("id", ""))
            )
        except (DecodeError, ValueError) as exc:
            raise SessionError(f"bad entry {line.get('id')} of {token}: {exc}") from exc
        expected = self._seq.get(token, entry.seq - 1) + 1
        if entry.seq != expected:
            self.gaps += 1
            log.warning("replay.stream.gap", token=token, expected=expected, got=entry.seq)
        self._seq[token] = entry.seq
        self.writer.outbox.put_nowait([entry.event], entry.epoch, entry.rx)

"""Following many tokens on a Redis Cluster: which streams moved, then read only those.

On one server a consumer follows every token in one blocking XREAD. A cluster refuses that:
XREAD may only name keys of one slot, and 2,000 tokens sit in about 2,000 slots. Polling each
stream would cost a command per token per poll. Instead the feeder appends, once per batch and
partition, the written tokens to `P:moved:{pN}` (feeder/publisher.py); `MovedWatch` keeps one
blocking XREAD per partition followed (a task each, on the cluster client's pooled
connections) and collects the named tokens; the reader then sends one non-blocking XREAD per
moved stream, one pipeline per primary (keyed.py), sent at once: one round trip each, and a
primary that cannot be reached fails only its own streams' reads.

A notice can be missed: the watch started after it, a partition's read failed (a primary's
failover), the feeder could not write it, or it was trimmed while the consumer was stalled.
Each of those makes the next fetch a *sweep*: every followed stream is read once. The reader's
gap audit also pokes tokens whose hash is ahead of the book (reader.py), so a lost notice costs
at most an audit interval, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterable
from typing import Any

import structlog
from redis.asyncio.cluster import RedisCluster

from polybus.consumers.keyed import reads
from polybus.consumers.redisio import RAW, raw, text
from polybus.redisio import Client
from polybus.wire import keys
from polybus.wire.errors import DecodeError
from polybus.wire.partitions import partition_of


__all__ = ["MovedWatch", "node_of", "read_each"]

log = structlog.get_logger("consumers.moved")

_NOTICES = 500
"""Notices taken per read; a full read may have skipped trimmed ones: the next fetch sweeps."""

_RETRY_S = 0.2
"""Pause after a partition's read failed (the cluster is failing over, or Redis is lost)."""


async def read_each(
    redis: Client, streams: dict[str, str], count: int
) -> tuple[list[Any], dict[str, BaseException]]:
    """One non-blocking `XREAD COUNT count` per stream (key -> cursor), in one pipeline (one
    per primary on a cluster, each failing alone: keyed.py): the XREAD reply shape
    ([[key, entries]…], streams with entries only) and each key's error."""
    if not streams:
        return [], {}
    commands = [(k, ("XREAD", "COUNT", count, "STREAMS", k, c)) for k, c in streams.items()]
    replies = await reads(redis, commands)
    reply: list[Any] = []
    errors: dict[str, BaseException] = {}
    for key, answer in zip(streams, replies, strict=True):
        if isinstance(answer, BaseException):
            errors[key] = answer
        elif answer:
            reply += answer
    return reply, errors


async def node_of(redis: Client, key: str) -> dict[str, Any]:
    """`target_nodes` naming the node that serves `key`, on a cluster ({} on one server).

    redis-py cannot tell where XREAD's keys are (they follow options), so without a node named
    it asks the server (COMMAND GETKEYS) for every XREAD, one round trip each before the
    pipeline goes out. A key that moved meanwhile is redirected (MOVED) as usual."""
    if not isinstance(redis, RedisCluster):
        return {}
    await redis.initialize()  # no-op once the client knows the cluster
    return {"target_nodes": redis.get_node_from_key(key)}


class MovedWatch:
    """The tokens whose streams have news, from the partitions' `P:moved:{pN}` streams."""

    def __init__(self, prefix: str, block_ms: int, sweep_s: float = float("inf")) -> None:
        """`sweep_s`: read every followed stream at least this often (default never: the
        reader's gap audit already finds what a lost notice hid, at far less cost)."""
        self.prefix, self.block_ms, self.sweep_s = prefix, block_ms, sweep_s
        self.moved: set[str] = set()
        self.sweep = True
        """Read every followed stream next time (a notice may have been missed)."""
        self.partitions: int | None = None
        self.failures = 0
        """Partition reads that failed (each followed by a sweep)."""
        self.notices = 0
        """Notices read."""
        self.starts = 0
        """Partition readers (re)started from the newest notice (each asks for a sweep)."""
        self.sweeps = 0
        """Fetches that read every followed stream."""
        self._woken = asyncio.Event()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._redis: Client | None = None
        self._next_sweep = 0.0
        self._counted, self._recount_at = -1, 0.0

    def poke(self, tokens: Iterable[str]) -> None:
        """These tokens have news (the audit found their hash ahead): read them next."""
        self.moved.update(tokens)
        if self.moved:
            self._woken.set()

    def later(self, tokens: Iterable[str]) -> None:
        """Read these tokens at the next fetch, without waking it (their read was declined
        for now: a cluster failing over)."""
        self.moved.update(tokens)

    async def wait(
        self, redis: Client, followed: Collection[str], block_ms: int
    ) -> set[str] | None:
        """The followed tokens with news, waiting up to `block_ms` for a notice; None when
        every followed stream must be read (a sweep)."""
        if not await self._watch(redis, followed):  # no notices to wait for: poll
            await asyncio.sleep(block_ms / 1000)
            self.sweeps += 1
            return None
        loop = asyncio.get_running_loop()
        if not self.moved and not self.sweep and loop.time() < self._next_sweep:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), block_ms / 1000)
        self._woken.clear()
        if self.sweep or loop.time() >= self._next_sweep:
            self.sweep, self.moved = False, set()
            self._next_sweep = loop.time() + self.sweep_s
            self.sweeps += 1
            return None
        news, self.moved = {t for t in self.moved if t in followed}, set()
        return news

    async def _watch(self, redis: Client, followed: Collection[str]) -> bool:
        """A blocking reader on each partition the followed tokens are in; False while the
        feeders have not recorded the partition count (no notices: every fetch polls). The
        partitions are worked out again when the number followed changes, else every second
        (not per fetch: thousands of CRCs; a token whose reader starts late is caught up by the
        next sweep or the gap audit)."""
        if self._redis is not redis:
            await self.close()
            self._redis = redis
        if self.partitions is None:
            self.partitions = await _partition_count(redis, self.prefix)
            if self.partitions is None:
                self.sweep = True
                return False
        now = asyncio.get_running_loop().time()
        if len(followed) == self._counted and now < self._recount_at:
            return True
        self._counted, self._recount_at = len(followed), now + 1.0
        wanted = {partition_of(t, self.partitions) for t in followed}
        for partition in wanted - set(self._tasks):
            self._tasks[partition] = asyncio.create_task(self._follow(redis, partition))
        for partition in set(self._tasks) - wanted:
            self._tasks.pop(partition).cancel()
        return True

    async def _follow(self, redis: Client, partition: int) -> None:
        key, cursor = keys.moved(partition, self.prefix), ""
        me = asyncio.current_task()
        while self._tasks.get(partition) is me:
            try:
                if not cursor:  # from the newest notice: what came before, a sweep covers
                    cursor = await _last_id(redis, key)
                    self.starts += 1
                    self._wake(sweep=True)
                where = await node_of(redis, key)
                reply: Any = await redis.execute_command(
                    "XREAD", "COUNT", _NOTICES, "BLOCK", self.block_ms, "STREAMS", key, cursor,
                    **RAW, **where,
                )  # fmt: skip
                cursor = self._take(reply, cursor)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis failing, or a notice someone else wrote as garbage
                self.failures += 1
                if cursor:
                    log.warning("consumers.moved.lost", partition=partition, error=str(exc))
                cursor = ""
                self._wake(sweep=True)  # until this partition reads again, fetches sweep
                await asyncio.sleep(_RETRY_S)

    def _take(self, reply: Any, cursor: str) -> str:
        """Collect the tokens a reply names; the new cursor."""
        items = reply[0][1] if reply else []
        for entry_id, fields in items:
            cursor = text(entry_id)
            names = (fields or {}).get(b"tokens", b"")
            self.moved.update(text(names).split())
            self.notices += 1
        if items:
            self._wake(sweep=len(items) >= _NOTICES)
        return cursor

    def _wake(self, *, sweep: bool) -> None:
        self.sweep = self.sweep or sweep
        self._woken.set()

    async def close(self) -> None:
        """Stop every partition's reader (at disconnect, or when the client changes), within
        about a block time: redis-py's cluster client may swallow a cancellation of a
        blocked read and send it again, so each reader also checks that it is still wanted."""
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.block_ms / 1000 + 1.0)
        self.partitions, self.sweep, self._counted = None, True, -1


async def _partition_count(redis: Client, prefix: str) -> int | None:
    """`P:partitions`, the count the feeders recorded (None: none yet, or not a number)."""
    value: Any = await raw(redis, "GET", keys.partitions(prefix))
    try:
        count = int(text(value)) if value is not None else 0
    except (DecodeError, ValueError):
        return None
    return count if count > 0 else None


async def _last_id(redis: Client, key: str) -> str:
    """The stream's newest id ("0-0" when it is empty or absent)."""
    reply: Any = await raw(redis, "XREVRANGE", key, "+", "-", "COUNT", 1)
    return text(reply[0][0]) if reply else "0-0"

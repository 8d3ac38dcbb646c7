"""Work-sharing readers (an archiver, say): consumer groups with acknowledgement and reclaim.

Broadcast readers (MarketFeed, the default) never use groups: every strategy must see every
event. A `GroupReader` instead splits the entries of some streams among the members of a
group: each entry goes to one member, which acknowledges it when done. Entries left pending on
a member that died are taken over with XAUTOCLAIM once idle for `claim_idle_ms`; entries that
were trimmed away meanwhile come back as deleted ids and are acknowledged, not retried.

A poisoned entry (one that cannot be decoded) is acknowledged at once — retrying it can never
succeed and would leave it pending forever — counted in `poisoned` and reported to `on_error`
(a DecodeError naming the token and entry); `read()` and `reclaim()` never raise for one.

On a Redis Cluster one XREADGROUP cannot name streams of many slots: `read()` waits for the
feeders' notices of which streams moved (moved.py) and sends one XREADGROUP per named stream,
in one pipeline (one round trip per node). Call `close()` when done: it stops the notice
readers.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import ResponseError

from polybus.consumers.moved import MovedWatch, node_of
from polybus.consumers.redisio import RAW, raw, text
from polybus.redisio import Client, on_cluster
from polybus.wire import keys
from polybus.wire.codec import decode
from polybus.wire.errors import DecodeError
from polybus.wire.events import Entry
from polybus.wire.settings import bus_target


__all__ = ["GroupReader", "Work"]

log = structlog.get_logger("consumers.groups")


@dataclass(frozen=True, slots=True)
class Work:
    """One entry handed to this member: acknowledge it with `GroupReader.ack`."""

    token: str
    id: str
    entry: Entry


class GroupReader:
    """One member of a consumer group over the streams of some tokens."""

    def __init__(
        self,
        redis: Client,
        group: str,
        member: str,
        tokens: list[str],
        *,
        prefix: str | None = None,
        claim_idle_ms: int = 30_000,
        on_error: Callable[[Exception], Any] | None = None,
    ) -> None:
        self.redis, self.group, self.member = redis, group, member
        prefix = bus_target(os.environ, prefix=prefix).prefix  # POLYBUS_PREFIX, as MarketFeed
        self.streams = {keys.stream(keys.validate_token(t), prefix): t for t in tokens}
        self.claim_idle_ms = claim_idle_ms
        self.on_error = on_error
        self.trimmed = 0
        """Pending entries found deleted (trimmed) when reclaimed: acknowledged and skipped."""
        self.poisoned = 0
        """Entries that could not be decoded: acknowledged, reported, skipped."""
        self.moved = MovedWatch(prefix, block_ms=500)
        """On a cluster: which of the streams have news."""

    async def close(self) -> None:
        """Stop the cluster notice readers (a single server has none)."""
        await self.moved.close()

    async def create(self, start: str = "0") -> None:
        """Create the group on every stream (and the stream if absent); idempotent."""
        for key in self.streams:
            try:
                await self.redis.xgroup_create(key, self.group, id=start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, count: int = 100, block_ms: int = 1000) -> list[Work]:
        """New entries for this member (XREADGROUP `>`), `count` per stream at most."""
        if on_cluster(self.redis):
            return await self._read_moved(count, block_ms)
        reply: Any = await raw(
            self.redis,
            "XREADGROUP",
            "GROUP",
            self.group,
            self.member,
            "COUNT",
            count,
            "BLOCK",
            block_ms,
            "STREAMS",
            *self.streams,
            *([">"] * len(self.streams)),
        )
        out: list[Work] = []
        for key, items in reply or []:
            out += await self._decode(text(key), items)
        return out

    async def _read_moved(self, count: int, block_ms: int) -> list[Work]:
        """On a cluster: wait for notices, then one XREADGROUP per moved stream (every stream
        on a sweep). A stream refused (NOGROUP, say) raises only if no other gave work."""
        by_token = {token: key for key, token in self.streams.items()}
        news = await self.moved.wait(self.redis, by_token, block_ms)
        chosen = list(self.streams) if news is None else [by_token[t] for t in news]
        pipe = self.redis.pipeline(transaction=False)
        for key in chosen:
            where = await node_of(self.redis, key)
            pipe.execute_command(
                "XREADGROUP", "GROUP", self.group, self.member, "COUNT", count,
                "STREAMS", key, ">", **RAW, **where,
            )  # fmt: skip
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        out: list[Work] = []
        for key, reply in zip(chosen, replies, strict=True):
            if isinstance(reply, Exception) or not reply:
                continue
            items = reply[0][1]
            if len(items) >= count:  # more may wait: read it again without waiting
                self.moved.poke([self.streams[key]])
            out += await self._decode(key, items)
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        if failed is not None and not out:
            raise failed
        return out

    async def reclaim(self, count: int = 100) -> list[Work]:
        """Take over entries idle on other (dead) members; acknowledge trimmed ones."""
        out: list[Work] = []
        for key in self.streams:
            start = "0-0"
            while True:
                reply: Any = await raw(
                    self.redis,
                    "XAUTOCLAIM",
                    key,
                    self.group,
                    self.member,
                    self.claim_idle_ms,
                    start,
                    "COUNT",
                    count,
                )
                start, claimed = text(reply[0]), reply[1]
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    self.trimmed += len(deleted)
                    await self.redis.xack(key, self.group, *deleted)
                out += await self._decode(key, claimed)
                if start == "0-0":
                    break
        return out

    async def ack(self, work: list[Work]) -> int:
        """Acknowledge processed entries; returns how many were pending."""
        done = 0
        for key, token in self.streams.items():
            ids = [w.id for w in work if w.token == token]
            if ids:
                done += int(await self.redis.xack(key, self.group, *ids))
        return done

    async def _decode(self, key: str, items: list[Any]) -> list[Work]:
        """The decodable entries as Work; poisoned ones acknowledged and reported."""
        token = self.streams[key]
        out: list[Work] = []
        poisoned: list[str] = []
        for raw_id, fields in items:
            if not fields:
                continue  # deleted meanwhile (XREADGROUP of a trimmed pending entry)
            entry_id = text(raw_id)
            try:
                out.append(Work(token, entry_id, decode(fields, token, entry_id)))
            except Exception as exc:  # DecodeError, or anything garbage provokes
                poisoned.append(entry_id)
                await self._report(token, entry_id, exc)
        if poisoned:
            self.poisoned += len(poisoned)
            await self.redis.xack(key, self.group, *poisoned)
        return out

    async def _report(self, token: str, entry_id: str, exc: Exception) -> None:
        error = DecodeError(f"token {token}: stream entry {entry_id} cannot be used: {exc}")
        error.__cause__ = exc
        log.warning("consumers.groups.poisoned", token=token, id=entry_id, error=str(exc))
        if self.on_error is not None:
            try:
                result = self.on_error(error)
                if inspect.isawaitable(result):
                    await result
            except Exception as failure:  # the caller's bug must not lose the batch
                log.error("consumers.groups.on_error_failed", error=repr(failure))

"""Work-sharing readers (an archiver, say): consumer groups with acknowledgement and reclaim.

Broadcast readers (MarketFeed, the default) never use groups: every strategy must see every
event. A `GroupReader` instead splits the entries of some streams among the members of a
group: each entry goes to one member, which acknowledges it when done. Entries left pending on
a member that died are taken over with XAUTOCLAIM once idle for `claim_idle_ms`; entries that
were trimmed away meanwhile come back as deleted ids and are acknowledged, not retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from wire import keys
from wire.codec import decode
from wire.events import Entry


__all__ = ["GroupReader", "Work"]


@dataclass(frozen=True, slots=True)
class Work:
    """One entry handed to this member: acknowledge it with `GroupReader.ack`."""

    token: str
    id: str
    entry: Entry


class GroupReader:
    """One member of a consumer group over the streams of some tokens."""

    def __init__(self, redis: aioredis.Redis, group: str, member: str, tokens: list[str], *,
                 prefix: str = keys.DEFAULT_PREFIX, claim_idle_ms: int = 30_000) -> None:
        self.redis, self.group, self.member = redis, group, member
        self.streams = {keys.stream(keys.validate_token(t), prefix): t for t in tokens}
        self.claim_idle_ms = claim_idle_ms
        self.trimmed = 0
        """Pending entries found deleted (trimmed) when reclaimed: acknowledged and skipped."""

    async def create(self, start: str = "0") -> None:
        """Create the group on every stream (and the stream if absent); idempotent."""
        for key in self.streams:
            try:
                await self.redis.xgroup_create(key, self.group, id=start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, count: int = 100, block_ms: int = 1000) -> list[Work]:
        """New entries for this member (XREADGROUP `>`)."""
        reply: Any = await self.redis.xreadgroup(
            self.group, self.member, dict.fromkeys(self.streams, ">"),
            count=count, block=block_ms)
        return [self._work(key, eid, fields) for key, items in reply or []
                for eid, fields in items if fields]

    async def reclaim(self, count: int = 100) -> list[Work]:
        """Take over entries idle on other (dead) members; acknowledge trimmed ones."""
        out: list[Work] = []
        for key in self.streams:
            start = "0-0"
            while True:
                reply: Any = await self.redis.xautoclaim(
                    key, self.group, self.member, self.claim_idle_ms, start_id=start,
                    count=count)
                start, claimed = reply[0], reply[1]
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    self.trimmed += len(deleted)
                    await self.redis.xack(key, self.group, *deleted)
                out += [self._work(key, eid, f) for eid, f in claimed if f]
                if start in ("0-0", b"0-0"):
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

    def _work(self, key: str, entry_id: str, fields: dict[str, str]) -> Work:
        token = self.streams[key]
        return Work(token, entry_id, decode(fields, token, entry_id))

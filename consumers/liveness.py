"""Is a feeder alive? Its health key (`P:feeder:<id>`, a hash with a TTL) says so.

A feeder rewrites its key every couple of seconds; a killed or hung one lets it expire. The
watch remembers each feeder it has seen with its run (the `started` field): when a known key
disappears the feeder is *lost*; when it comes back with the same run it was only a blip (the
stream kept flowing), with a new run it restarted and will send fresh snapshots. Finding new
feeders needs a SCAN of the keyspace, so that happens only every few checks; known keys are
checked with one pipelined HGET each. Anything else under the pattern (a key of another type,
a name or `started` that is not UTF-8) is not a feeder: ignored, never an error for the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from polybus.consumers.redisio import RAW, classify, raw, text
from polybus.wire import keys
from polybus.wire.errors import DecodeError
from polybus.wire.hashes import HealthField, decode_run


__all__ = ["FeederChange", "FeederWatch"]


@dataclass(slots=True)
class FeederChange:
    """What one check found."""

    lost: list[str] = field(default_factory=list)
    blip: list[str] = field(default_factory=list)
    """Lost feeders back with the same run: the stream never stopped for long."""
    restarted: list[str] = field(default_factory=list)
    """Lost feeders back with a new run: fresh snapshots follow."""
    found: list[str] = field(default_factory=list)
    """Feeders never seen before."""


class FeederWatch:
    """Tracks the feeders' health keys under one prefix."""

    def __init__(self, prefix: str = keys.DEFAULT_PREFIX, scan_every: int = 5) -> None:
        self.pattern = keys.feeder_pattern(prefix)
        self.scan_every = scan_every
        self.live: dict[str, str] = {}
        """Health key -> run (its `started` field) of every feeder seen alive last check."""
        self.lost: dict[str, str] = {}
        self._checks = 0

    @property
    def seen(self) -> bool:
        """Whether any feeder was ever seen (before that, none is expected)."""
        return bool(self.live or self.lost)

    async def check(self, redis: aioredis.Redis) -> FeederChange:
        """Look at the health keys once; report what changed."""
        candidates = set(self.live) | set(self.lost)
        if self._checks % self.scan_every == 0 or not self.live:
            candidates |= await self._scan(redis)
        self._checks += 1
        ordered = sorted(candidates)
        pipe = redis.pipeline(transaction=False)
        for key in ordered:
            pipe.exists(key)
            pipe.execute_command("HGET", key, HealthField.STARTED, **RAW)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        now: dict[str, str] = {}
        for i, key in enumerate(ordered):
            exists, started = replies[2 * i], replies[2 * i + 1]
            for reply in (exists, started):
                if isinstance(reply, Exception) and (
                    isinstance(reply, NoPermissionError) or classify(reply) != "refused"
                ):
                    raise reply
            if exists is True or (isinstance(exists, int) and exists > 0):
                if not isinstance(started, Exception):  # else not a hash: not a feeder's
                    now[key] = decode_run(started)
        return self._update(now)

    async def _scan(self, redis: aioredis.Redis) -> set[str]:
        found: set[str] = set()
        cursor: Any = 0
        while True:
            cursor, names = await raw(redis, "SCAN", cursor, "MATCH", self.pattern, "COUNT", 1000)
            for name in names:
                try:
                    found.add(text(name))
                except DecodeError:
                    continue
            if int(cursor) == 0:
                return found

    def _update(self, now: dict[str, str]) -> FeederChange:
        change = FeederChange()
        for key, run in self.live.items():
            if key not in now:
                change.lost.append(key)
                self.lost[key] = run
        for key, run in now.items():
            if key in self.lost:
                same = self.lost.pop(key) == run
                (change.blip if same else change.restarted).append(key)
            elif key not in self.live:
                change.found.append(key)
        self.live = now
        return change

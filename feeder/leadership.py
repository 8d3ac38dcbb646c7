"""Partition leases in Redis: the I/O half of redundant feeders (the plan is feeder/roles.py).

Keys (wire/keys.py): `P:partitions` (the partition count, set once), `P:members` (a sorted
set: feeder id -> membership expiry, server ms), and per partition `P:lease:{pN}` (value
`fence:feeder_id`, PX = POLYBUS_LEASE_MS) and `P:fence:{pN}` (the counter INCR'd at every
acquisition). A partition's two keys share a hash tag, so each script touches one slot.

One beat is two round trips: the membership script plus a GET of every lease and an HGET of
every member's warm partitions, then one pipeline of lease scripts. A leader releasing on
SIGTERM PUBLISHes the partitions on `P:handover`, and every standby's beat wakes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import NoScriptError

from polybus.feeder.roles import Plan, View, plan
from polybus.redisio import REDIS_OR_OS_ERRORS, Client, on_cluster
from polybus.wire import keys
from polybus.wire.errors import BackendError, ConfigError, DecodeError
from polybus.wire.partitions import Lease, decode_lease


__all__ = ["Beat", "Leadership"]

log = structlog.get_logger("feeder.leadership")

_LISTEN_ERRORS: tuple[type[Exception], ...] = (*REDIS_OR_OS_ERRORS, KeyError)
"""What ends a subscription until the next try (KeyError: a cluster client's slot map is
missing a slot, seen with redis-py 8.1 mid-failover)."""

_MEMBERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
"""Join (or stay in) the members set with a server-clock expiry; return the live members."""

_TAKE = """
local held = redis.call('GET', KEYS[1])
if held then
  local fence, holder = string.match(held, '^(%d+):(.+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(fence), holder}
  end
  return {0, tonumber(fence) or 0, holder or held}
end
if ARGV[3] == '1' then return {0, 0, ''} end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence .. ':' .. ARGV[1], 'PX', ARGV[2])
return {2, fence, ARGV[1]}
"""
"""Renew my lease (1), or take a free one with a new fence (2); 0 = held by another (or,
renew only, gone). Returns {code, fence, holder}."""

_RELEASE = """
local held = redis.call('GET', KEYS[1])
if held and string.match(held, '^%d+:(.+)$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(slots=True)
class Beat:
    """What changed this beat."""

    gained: dict[int, tuple[int, str]] = field(default_factory=dict)
    """partition -> (my new fence, the previous writer as far as known)."""
    lost: set[int] = field(default_factory=set)
    """Partitions I led and no longer do (renewal failed, or released)."""


class Leadership:
    """This feeder's partition leases."""

    def __init__(
        self,
        redis: Client,
        *,
        me: str,
        prefix: str,
        partitions: int,
        replicas: int,
        lease_ms: int,
    ) -> None:
        self.redis = redis
        self.me, self.prefix = me, prefix
        self.partitions, self.replicas, self.lease_ms = partitions, replicas, lease_ms
        self.led: dict[int, int] = {}
        """partition -> the fence I hold it with."""
        self.carrying: frozenset[int] = frozenset(range(partitions))
        """Partitions whose tokens I subscribe (all until the first beat says otherwise)."""
        self.members: list[str] = []
        self.warm: dict[str, frozenset[int]] = {}
        self.wake = asyncio.Event()
        self._last_writer: dict[int, str] = {}
        self._sha: dict[str, str] = {}

    async def setup(self) -> None:
        """Record the partition count, or refuse to run with another one (ConfigError)."""
        key = keys.partitions(self.prefix)
        await self.redis.set(key, str(self.partitions), nx=True)
        raw = await self.redis.get(key)
        recorded = raw.decode() if isinstance(raw, bytes) else str(raw)
        if recorded != str(self.partitions):
            raise ConfigError(
                f"POLYBUS_PARTITIONS={self.partitions}, but the feeders on prefix "
                f"{self.prefix!r} use {recorded} ({key}): every feeder on a prefix must use the "
                f"same count; set POLYBUS_PARTITIONS={recorded} (or use another prefix)"
            )

    async def _load(self, source: str) -> str:
        sha = self._sha.get(source)
        if sha is None:
            sha = self._sha[source] = str(await self.redis.script_load(source))
        return sha

    async def _script(self, source: str, keys_: list[str], args: list[Any]) -> Any:
        for _ in range(2):
            sha = await self._load(source)
            try:
                return await self.redis.evalsha(sha, len(keys_), *keys_, *args)
            except NoScriptError:  # a restarted server lost its script cache
                self._sha.pop(source, None)
        raise BackendError("redis: the lease scripts cannot be loaded")

    async def read(self) -> View:
        """Round trip 1: membership, every lease, every known member's warm partitions."""
        members = await self._script(
            _MEMBERS, [keys.members(self.prefix)], [self.me, self.lease_ms]
        )
        self.members = sorted(str(m) for m in members)
        pipe = self.redis.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.get(keys.lease(p, self.prefix))
        for m in self.members:
            pipe.hget(keys.feeder(m, self.prefix), "warm")
        replies = await pipe.execute(raise_on_error=False)
        leases: dict[int, Lease] = {}
        for p, text in enumerate(replies[: self.partitions]):
            with contextlib.suppress(DecodeError, TypeError, AttributeError):
                if text is not None and not isinstance(text, Exception):
                    leases[p] = decode_lease(str(text))
        self.warm = {
            m: _partition_set(w)
            for m, w in zip(self.members, replies[self.partitions :], strict=True)
        }
        for p, lease in leases.items():
            self._last_writer[p] = lease.holder
        return View(self.me, frozenset(self.members), self.warm, leases)

    async def beat(self, warm: frozenset[int]) -> Beat:
        """Read, plan, and take/renew/release leases; raises RedisError / OSError."""
        view = await self.read()
        todo = plan(
            view,
            self.partitions,
            self.replicas,
            carrying=self.carrying,
            led=frozenset(self.led),
            warm=warm,
        )
        beat = Beat()
        await self._apply(todo, beat)
        self.carrying = todo.carry | frozenset(self.led)
        return beat

    async def _apply(self, todo: Plan, beat: Beat) -> None:
        wanted = sorted(todo.renew | todo.acquire)
        results = await asyncio.gather(
            *(
                self._script(
                    _TAKE,
                    [keys.lease(p, self.prefix), keys.fence(p, self.prefix)],
                    [self.me, self.lease_ms, "1" if p in self.led else "0"],
                )
                for p in wanted
            ),
            return_exceptions=True,
        )
        for p, res in zip(wanted, results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, REDIS_OR_OS_ERRORS):
                    continue  # unknown this beat: a lease I held may lapse; fencing covers it
                raise res
            code, fence = int(res[0]), int(res[1])
            if code == 2:
                previous = self._last_writer.get(p, "")
                self.led[p] = fence
                beat.gained[p] = (fence, previous if previous != self.me else "")
            elif code == 0 and p in self.led:
                del self.led[p]
                beat.lost.add(p)
        if todo.release:
            await self.release(sorted(todo.release))
            beat.lost.update(todo.release)

    def step_down(self, partition: int) -> None:
        """The atomic step refused my fence: a successor has written; I am a standby now."""
        self.led.pop(partition, None)

    async def release(self, partitions: list[int] | None = None) -> list[int]:
        """Give up leases now (SIGTERM, or a hand-over) and wake the standbys."""
        chosen = sorted(self.led) if partitions is None else partitions
        if not chosen:
            return []
        sha = await self._load(_RELEASE)
        pipe = self.redis.pipeline(transaction=False)
        for p in chosen:
            pipe.execute_command("EVALSHA", sha, 1, keys.lease(p, self.prefix), self.me)
        # PUBLISH reaches every node's subscribers on a cluster too; execute_command is what
        # redis-py's cluster pipeline allows (it refuses pipe.publish and pipe.evalsha)
        pipe.execute_command("PUBLISH", keys.handover(self.prefix), ",".join(map(str, chosen)))
        await pipe.execute()
        for p in chosen:
            self.led.pop(p, None)
        return chosen

    async def listen(self) -> None:
        """Set `wake` whenever a leader hands partitions over (pub/sub); reconnects forever."""
        while True:
            if on_cluster(self.redis):
                # a cluster client's pub/sub needs its slot map first (redis-py 8.1 raises
                # KeyError without one); PUBLISH reaches subscribers on every node
                with contextlib.suppress(*REDIS_OR_OS_ERRORS):
                    await self.redis.ping()
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.handover(self.prefix))
                async for message in pubsub.listen():
                    if message and message.get("type") == "message":
                        self.wake.set()
            except _LISTEN_ERRORS:
                await asyncio.sleep(self.lease_ms / 3000)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


def _partition_set(text: Any) -> frozenset[int]:
    """A member's `warm` field ("0,3,7"); anything unreadable is no partition."""
    if not isinstance(text, str | bytes) or not text:
        return frozenset()
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return frozenset(int(x) for x in raw.split(",") if x.isdigit())

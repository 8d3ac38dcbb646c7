"""Is somebody writing my books? Partition leases say so; with older feeders, health keys.

**Redundant feeders** (a prefix with `P:partitions`): a token's book is written by whoever
holds the lease of its partition (`P:lease:{pN}`, docs/ha.md; the rule: wire/maintained.py).
`LeaseWatch` reads `P:partitions` and the lease of each partition the followed tokens fall in,
in one pipelined round trip per check. A partition whose lease has been missing for longer
than the lease time (POLYBUS_LEASE_MS) is *lost*: nobody may write its tokens. A lease that
changes holder or fence between checks — a failover, even with a short gap — is not a loss:
the new leader's `failover` entry, the missed events and its snapshot follow in the stream.
Garbage (a count or lease value no feeder writes, a key of another type) reads as no lease,
logged once per reason; a denied GET (an ACL without it) is raised, like any refused read.
On a cluster each key is read from its own primary (keyed.py): a lease whose primary is
failing over is *unknown* for that check, not missing — the partition keeps what it had; so
is the count (the check changes nothing).

**Older feeders** (no `P:partitions`): a feeder's health key (`P:feeder:<id>`, a hash with a
TTL) says it is alive.

A feeder rewrites its key every couple of seconds; a killed or hung one lets it expire. The
watch remembers each feeder it has seen with its run (the `started` field): when a known key
disappears the feeder is *lost*; when it comes back with the same run it was only a blip (the
stream kept flowing), with a new run it restarted and will send fresh snapshots. Finding new
feeders needs a SCAN of the keyspace, so that happens only every few checks; known keys are
checked with one pipelined HGET each (on a cluster a key whose primary is failing over keeps
its state, and SCAN skips that primary). Anything else under the pattern (a key of another type,
a name or `started` that is not UTF-8) is not a feeder: ignored, never an error for the loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import NoPermissionError

from polybus.consumers.keyed import out_of_reach, reads
from polybus.consumers.redisio import classify, scan
from polybus.redisio import Client
from polybus.redisio.nodes import Keyed
from polybus.wire import keys
from polybus.wire.hashes import HealthField, decode_run
from polybus.wire.maintained import partition_count, read_lease
from polybus.wire.partitions import Lease, partition_of


__all__ = ["NO_COUNT", "FeederChange", "FeederWatch", "LeaseChange", "LeaseWatch"]

log = structlog.get_logger("consumers.liveness")

NO_COUNT = -1
"""The partition of every token while `P:partitions` holds garbage: it never has a lease."""


class _Unknown:
    """A key this check could not read (its primary is failing over)."""


_UNKNOWN = _Unknown()


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

    async def check(self, redis: Client) -> FeederChange:
        """Look at the health keys once; report what changed."""
        candidates = set(self.live) | set(self.lost)
        if self._checks % self.scan_every == 0 or not self.live:
            candidates |= await self._scan(redis)
        self._checks += 1
        ordered = sorted(candidates)
        commands: list[Keyed] = []
        for key in ordered:
            commands += [(key, ("EXISTS", key)), (key, ("HGET", key, HealthField.STARTED))]
        replies = await reads(redis, commands)
        now: dict[str, str] = {}
        for i, key in enumerate(ordered):
            exists, started = replies[2 * i], replies[2 * i + 1]
            if out_of_reach(redis, exists) or out_of_reach(redis, started):
                # its primary is failing over: unknown, so as it was (alive, or lost)
                if key in self.live:
                    now[key] = self.live[key]
                continue
            for reply in (exists, started):
                if isinstance(reply, Exception) and (
                    isinstance(reply, NoPermissionError) or classify(reply) != "refused"
                ):
                    raise reply
            if exists is True or (isinstance(exists, int) and exists > 0):
                if not isinstance(started, Exception):  # else not a hash: not a feeder's
                    now[key] = decode_run(started)
        return self._update(now)

    async def _scan(self, redis: Client) -> set[str]:
        return await scan(redis, self.pattern, partial=True)

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


@dataclass(slots=True)
class LeaseChange:
    """What one lease check found."""

    lost: list[int] = field(default_factory=list)
    """Partitions that have just been without a live lease for longer than the lease time."""
    back: dict[int, Lease] = field(default_factory=dict)
    """Lost partitions with a live lease again: their lease now."""
    moved: dict[int, tuple[Lease, Lease]] = field(default_factory=dict)
    """Partitions whose lease changed (before, after) without being lost: a failover."""


class LeaseWatch:
    """Tracks the leases of the partitions a set of tokens falls in, under one prefix."""

    def __init__(self, prefix: str = keys.DEFAULT_PREFIX, lease_ms: int = 3000) -> None:
        self.prefix, self.lease_ms = prefix, lease_ms
        self.partitioned = False
        """Whether `P:partitions` exists (else the older feeders' health keys decide)."""
        self.count: int | None = None
        self.leases: dict[int, Lease] = {}
        """partition -> the last live lease seen (kept through a gap, to tell a failover)."""
        self.missing: dict[int, float] = {}
        """partition -> when (monotonic) a check first found it without a live lease."""
        self.lost: set[int] = set()
        self._logged: set[str] = set()

    def partition(self, token: str) -> int:
        """The token's partition under the recorded count (NO_COUNT while it is garbage)."""
        return NO_COUNT if self.count is None else partition_of(token, self.count)

    def unleased(self, tokens: Iterable[str]) -> set[int]:
        """Partitions of these tokens without a live lease at the last check."""
        if not self.partitioned:
            return set()
        return {self.partition(t) for t in tokens} & (set(self.missing) | self.lost)

    async def check(self, redis: Client, tokens: Iterable[str], now: float) -> LeaseChange:
        """One round trip (two when the count is first seen or changes); what changed."""
        tokens = list(tokens)
        raw_count, leases = await self._read(redis, self._wanted(tokens))
        if raw_count is _UNKNOWN:  # its primary is failing over: nothing known to change
            return LeaseChange()
        if raw_count is None:
            if self.partitioned:
                log.info("consumers.leases.gone", key=keys.partitions(self.prefix))
            self._reset()
            return LeaseChange()
        count = partition_count(raw_count)
        if count is None:
            self._once(
                f"{keys.partitions(self.prefix)} holds {raw_count!r:.40}: not a "
                "partition count, read as no lease"
            )
        if not self.partitioned or count != self.count:
            self.partitioned, self.count = True, count
            _, leases = await self._read(redis, self._wanted(tokens))
        return self._update(leases, {self.partition(t) for t in tokens}, now)

    def _wanted(self, tokens: list[str]) -> list[int]:
        if not self.partitioned or self.count is None:
            return []
        return sorted({self.partition(t) for t in tokens})

    async def _read(
        self, redis: Client, wanted: list[int]
    ) -> tuple[Any, dict[int, Lease | _Unknown | None]]:
        """The raw count (_UNKNOWN: unreadable now) and each wanted partition's lease."""
        names = [keys.partitions(self.prefix), *(keys.lease(p, self.prefix) for p in wanted)]
        replies = await reads(redis, [(name, ("GET", name)) for name in names])
        for reply in replies:
            if (
                isinstance(reply, Exception)
                and not out_of_reach(redis, reply)
                and (isinstance(reply, NoPermissionError) or classify(reply) != "refused")
            ):
                raise reply
        count = _UNKNOWN if out_of_reach(redis, replies[0]) else replies[0]
        if isinstance(count, Exception):  # WRONGTYPE: exists, but no feeder wrote it
            count = f"<{count}>"
        leases: dict[int, Lease | _Unknown | None] = {}
        for p, reply in zip(wanted, replies[1:], strict=True):
            if out_of_reach(redis, reply):
                leases[p] = _UNKNOWN
                continue
            lease = None if isinstance(reply, Exception) else read_lease(reply)
            if lease is None and reply is not None:
                self._once(
                    f"{keys.lease(p, self.prefix)} holds {reply!r:.40}: not a lease, read as none"
                )
            leases[p] = lease
        return count, leases

    def _update(
        self, leases: dict[int, Lease | _Unknown | None], wanted: set[int], now: float
    ) -> LeaseChange:
        change = LeaseChange()
        for p in wanted:
            lease = leases.get(p)
            if isinstance(lease, _Unknown):  # unreadable now: it keeps what it had
                continue
            if lease is not None:
                self.missing.pop(p, None)
                if p in self.lost:
                    self.lost.discard(p)
                    change.back[p] = lease
                elif p in self.leases and self.leases[p] != lease:
                    change.moved[p] = (self.leases[p], lease)
                self.leases[p] = lease
                continue
            since = self.missing.setdefault(p, now)
            if p not in self.lost and now - since > self.lease_ms / 1000:
                self.lost.add(p)
                change.lost.append(p)
        for gone in (set(self.leases) | set(self.missing) | self.lost) - wanted:
            self.leases.pop(gone, None)  # no followed token there any more
            self.missing.pop(gone, None)
            self.lost.discard(gone)
        return change

    def _reset(self) -> None:
        self.partitioned, self.count = False, None
        self.leases.clear()
        self.missing.clear()
        self.lost.clear()

    def _once(self, reason: str) -> None:
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("consumers.leases.garbage", reason=reason)

"""Redundant feeders: the feeder's side of partitions, leases, standby and takeover.

Every beat (a third of POLYBUS_LEASE_MS, or at once when a leader hands over) the leadership
plan says which partitions this feeder carries and leads. Carried partitions' tokens are
subscribed; of those, only led ones are published (the gate), the rest are folded into the
mirror and held in the standby buffer. A partition gained is taken over in two writes, both
from the publish loop so that they are ordered with everything else this feeder writes:

1. a `failover` status for each of its tokens, with the new fence (from now on the old
   leader's writes are refused) and the stream's last entries read in the same atomic step;
2. what the old leader did not write — the held events after the newest of those entries
   found in the buffer (feeder/takeover.py) — then the warm book as a `source=standby`
   snapshot (a token with no warm book is marked `suspect` and resynced instead).

The gate opens between the two, with no await in between, so an event is either held (and
replayed by step 2) or queued after it. With no previous leader seen (a first start, or the
last leader gone before this feeder ever saw it), the gate just opens: what is held is
published as it is, and the connections' own statuses say the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import structlog

from polybus.feeder.gate import Gate
from polybus.feeder.leadership import Beat, Leadership
from polybus.feeder.outbox import Batch
from polybus.redisio import REDIS_OR_OS_ERRORS
from polybus.wire.codec import decode
from polybus.wire.errors import BackendError, DecodeError
from polybus.wire.events import Book, Event, Status


if TYPE_CHECKING:
    from polybus.feeder.app import Feeder


__all__ = ["Redundancy"]

log = structlog.get_logger("feeder.redundancy")

_RETRIED: tuple[type[Exception], ...] = (*REDIS_OR_OS_ERRORS, BackendError)
"""What costs a beat, never the loop."""


class Redundancy:
    """Partitions, leases and takeovers for one Feeder."""

    def __init__(self, feeder: Feeder) -> None:
        cfg = feeder.config
        self.feeder = feeder
        self.gate = Gate(cfg.partitions)
        self.leadership = Leadership(
            feeder.redis,
            me=cfg.feeder_id,
            prefix=cfg.prefix,
            partitions=cfg.partitions,
            replicas=cfg.replicas,
            lease_ms=cfg.lease_ms,
        )
        self.pending: dict[int, tuple[int, str]] = {}
        """Partitions gained and not yet taken over: partition -> (fence, previous writer)."""
        self.parked: set[str] = set()
        """Tokens this feeder would carry but whose partitions it does not."""
        self.counts: Counter[str] = Counter()
        """takeovers, matched, unmatched, replayed, cold, fenced, released, lost."""
        self._errors = 0

    # --- the beat ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Before any socket opens: check the partition count (ConfigError), join, and take
        the free leases — so a feeder alone writes from its first frame, as one always did."""
        await self.leadership.setup()
        with contextlib.suppress(*REDIS_OR_OS_ERRORS, BackendError):  # run() beats again
            self.apply(await self.leadership.beat(self.warm()))
        for p, (fence, old) in list(self.pending.items()):
            if not old:  # nothing held yet, nobody to take over from
                self.gate.open[p] = fence
                del self.pending[p]

    async def run(self) -> None:
        """Beat until cancelled; a Redis error costs one beat, never the loop."""
        tick = self.feeder.config.lease_ms / 3000
        listener = asyncio.create_task(self.leadership.listen())
        try:
            while True:
                self.leadership.wake.clear()
                try:
                    self.apply(await self.leadership.beat(self.warm()))
                    self._errors = 0
                except _RETRIED as exc:
                    self._errors += 1
                    if self._errors in (1, 10) or self._errors % 100 == 0:
                        log.warning(
                            "feeder.lease.beat_failed", error=str(exc), attempt=self._errors
                        )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.leadership.wake.wait(), tick)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    def apply(self, beat: Beat) -> None:
        """Act on one beat: close lost partitions, queue takeovers, follow the carry set."""
        for p in beat.lost:
            self.gate.close(p)
            self.pending.pop(p, None)
            self.counts["lost"] += 1
        if beat.lost:
            log.info("feeder.lease.lost", partitions=sorted(beat.lost))
        for p, gained in beat.gained.items():
            self.pending[p] = gained
        if beat.gained:
            log.info(
                "feeder.lease.gained",
                partitions=sorted(beat.gained),
                previous=sorted({old for _, old in beat.gained.values() if old}),
            )
            self.feeder.outbox.poke()  # the publish loop takes over before its next write
        self._follow(self.leadership.carrying)

    def warm(self) -> frozenset[int]:
        """Carried partitions whose carried tokens all have a synced book here."""
        ok = dict.fromkeys(self.leadership.carrying, True)
        synced = self.feeder.mirror.synced
        for token in self.feeder.carried():
            p = self.gate.partition(token)
            if p in ok and token not in synced:
                ok[p] = False
        return frozenset(p for p, good in ok.items() if good)

    # --- carrying: which tokens are subscribed -----------------------------------------------
    def split(self, tokens: list[str]) -> tuple[list[str], list[str]]:
        """(tokens of carried partitions, the others — parked until their partition is)."""
        carrying = self.leadership.carrying
        mine = [t for t in tokens if self.gate.partition(t) in carrying]
        rest = [t for t in tokens if self.gate.partition(t) not in carrying]
        self.parked.update(rest)
        return mine, rest

    def _follow(self, carrying: frozenset[int]) -> None:
        """Subscribe parked tokens of partitions now carried; shed those no longer carried."""
        unpark = [t for t in self.parked if self.gate.partition(t) in carrying]
        if unpark:
            self.parked.difference_update(unpark)
            self.feeder.carry(unpark)
        shed = [t for t in self.feeder.carried() if self.gate.partition(t) not in carrying]
        if shed:
            self.feeder.shed(shed)
            self.parked.update(shed)
            self.gate.buffer.forget(shed)
            log.info("feeder.partitions.shed", tokens=len(shed), carrying=len(carrying))

    # --- writing: fences, takeovers ------------------------------------------------------
    def fenced(self, refused: dict[str, str]) -> None:
        """The atomic step refused these tokens: a successor has written their partitions."""
        by: dict[int, str] = {self.gate.partition(t): w for t, w in refused.items()}
        for p, writer in by.items():
            if p in self.gate.open or p in self.leadership.led:
                self.gate.close(p)
                self.leadership.step_down(p)
                self.counts["fenced"] += 1
                log.warning("feeder.lease.fenced", partition=p, writer=writer)

    async def take_over_pending(self) -> None:
        """Take over every partition gained since the last write (from the publish loop)."""
        while self.pending:
            p, (fence, old) = next(iter(self.pending.items()))
            if self.leadership.led.get(p) != fence:  # lost again before we got to it
                self.pending.pop(p, None)
                continue
            await self._take_over(p, fence, old)  # raises what the publisher raises: retried
            self.pending.pop(p, None)  # a beat may have dropped it meanwhile (lost again)
            self.counts["takeovers"] += 1

    async def _take_over(self, p: int, fence: int, old: str) -> None:
        feeder, gate = self.feeder, self.gate
        tokens = gate.tokens_of(p, feeder.carried())
        if not old:  # no leader seen before us: what we hold is all there is
            batch = Batch()
            for token in tokens:
                for h in gate.buffer.take(token):
                    batch.add(h.event, h.epoch, h.rx)
            gate.open[p] = fence
            await feeder.publisher.write(batch)
            return
        gate.taking[p] = fence
        for token in tokens:  # others wrote them since we last did: their seq is theirs
            feeder.publisher.seqs.pop(token, None)
        try:
            first = Batch()
            now = time.time_ns() // 1000
            for token in tokens:
                first.add(Status(token, "failover", f"from {old}"), 0, now)
            first.peek = set(tokens)
            broken = await feeder.publisher.write(first)
            refused = {t: w for t, w in feeder.publisher.fenced.items() if t in set(tokens)}
            if refused:  # a newer leader already wrote: this lease is stale
                feeder.publisher.fenced = {
                    t: w for t, w in feeder.publisher.fenced.items() if t not in refused
                }
                self.fenced(refused)
                return
            if self.leadership.led.get(p) != fence:  # lost while the first write was out
                return
            second, cold = self._catch_up(tokens)
            gate.open[p] = fence  # from here on, new events of p go to the outbox
        finally:
            gate.taking.pop(p, None)
        broken += await feeder.publisher.write(second)
        if cold or broken:
            feeder.resync([*cold, *broken], "failover")
        log.info(
            "feeder.lease.took_over",
            partition=p,
            fence=fence,
            previous=old or None,
            tokens=len(tokens),
            cold=len(cold),
        )

    def _catch_up(self, tokens: list[str]) -> tuple[Batch, list[str]]:
        """Step 2's batch: held events after each token's anchor, then its warm book."""
        batch, cold = Batch(), []
        before = self.feeder.publisher.before
        for token in tokens:
            anchors = _events(token, before.pop(token, []))
            held, found = self.gate.buffer.after(token, anchors)
            self.counts["matched" if found else "unmatched"] += 1
            self.gate.buffer.forget([token])
            for h in held:
                batch.add(h.event, h.epoch, h.rx)
            self.counts["replayed"] += len(held)
            book = self._warm_book(token)
            if book is None:
                cold.append(token)
                self.counts["cold"] += 1
                continue
            batch.add(book, 0, time.time_ns() // 1000)
        return batch, cold

    def _warm_book(self, token: str) -> Book | None:
        mirror = self.feeder.mirror
        if token not in mirror.synced:
            return None
        b = mirror.book(token)
        return Book(
            token,
            b.market,
            b.ts,
            tuple(b.bids),
            tuple(b.asks),
            b.hash,
            source="standby",
            tick_size=b.tick_size,
        )

    def health(self) -> dict[str, Any]:
        """The health hash's partition fields (FeederHealth): carried, led, warm."""
        return {
            "partitions": self.gate.partitions,
            "lease_ms": self.leadership.lease_ms,
            "led": frozenset(self.gate.open),
            "carrying": self.leadership.carrying,
            "warm": self.warm(),
        }

    async def leave(self, budget: float) -> None:
        """Stopping: stop writing the partitions another live member has warm. Their books
        go on under that standby, so this feeder's sockets closing is no news for consumers
        (no `disconnected`); what arrives meanwhile is held, and the standby replays it.

        The members' warm partitions are read again first (within `budget`): a standby that
        finished warming since the last beat must count, or its partitions would be given
        `disconnected` statuses for nothing."""
        with contextlib.suppress(*REDIS_OR_OS_ERRORS, BackendError, TimeoutError):
            await asyncio.wait_for(self.leadership.read(), budget)
        me, warm = self.leadership.me, self.leadership.warm
        members = set(self.leadership.members)
        covered = {p for m, ps in warm.items() if m != me and m in members for p in ps}
        for p in [p for p in self.gate.open if p in covered]:
            self.gate.close(p)

    async def release(self) -> None:
        """SIGTERM: give every lease up now, so a standby leads within milliseconds."""
        for p in list(self.gate.open):
            self.gate.close(p)
        released = await self.leadership.release()
        self.counts["released"] += len(released)


def _events(token: str, raw: list[Any]) -> list[Event]:
    """The stream entries a peek returned, decoded (newest first); garbage is skipped."""
    out: list[Event] = []
    for item in raw:
        with contextlib.suppress(DecodeError, ValueError, TypeError, IndexError):
            entry_id, flat = item[0], item[1]
            fields = (
                dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else flat
            )
            out.append(decode(fields, token, entry_id).event)
    return out

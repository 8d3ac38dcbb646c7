"""The bounded buffer between the connections and the publisher.

Connections put whole frames' worth of events; the publisher takes everything queued as one
batch (one Redis round trip). Overflow rule: when `capacity` events are waiting, producers
wait (backpressure on the WebSocket reader, whose socket buffers then fill). Nothing is
dropped while Redis works; while it is down (`discarding`), token events are counted and
dropped instead, because every book is marked suspect and re-snapshotted once Redis is back —
blocking the readers then would only stall the sockets into pointless reconnects.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from polybus.wire.codec import Items, encode_items, encode_market
from polybus.wire.events import Event, MarketEvent


if TYPE_CHECKING:
    from polybus.feeder.gate import Gate


__all__ = ["BATCH_LIMIT", "Batch", "Outbox"]

BATCH_LIMIT = 10_000
"""Token events per write at most. Packing a write and reading its replies are synchronous
work on the event loop (a few µs an event): a write of a whole full outbox (100,000) would
hold the loop for a second or more — lease renewals and PINGs waiting behind it — exactly
when the feeder is behind. Whole tokens are taken, so each token's events stay in order."""


@dataclass(slots=True)
class Batch:
    """What the publisher writes in one round trip."""

    entries: dict[str, list[Items]] = field(default_factory=dict)
    """token -> its entries' field/value items, oldest first (the Lua step's ARGV tail)."""
    quarantine: list[dict[str, str]] = field(default_factory=list)
    markets: list[dict[str, str]] = field(default_factory=list)
    size: int = 0
    fences: dict[str, int] = field(default_factory=dict)
    """token -> the fence its events were queued under (redundant feeders)."""
    peek: set[str] = field(default_factory=set)
    """Tokens whose stream's last entries the write returns (a takeover's first write)."""

    def add(self, event: Event, epoch: int, rx: int) -> None:
        """Encode one token event into this batch."""
        items = encode_items(event, epoch=epoch, rx=rx)
        args = self.entries.get(event.asset_id)
        if args is None:
            args = self.entries[event.asset_id] = []
        args.append(items)
        self.size += 1


class Outbox:
    """Bounded, batching hand-off from many producers to one publisher."""

    def __init__(self, capacity: int = 100_000, gate: Gate | None = None) -> None:
        self.capacity = capacity
        self.gate = gate
        """Redundant feeders: events of tokens this feeder does not write are held there."""
        self._batch = Batch()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._seen_markets: set[tuple[str, str]] = set()
        self.discarding = False
        """While Redis is down: drop token events (every book is resynced afterwards) so the
        WebSocket readers never block and the sockets stay healthy."""
        self.discarded = 0

    def __len__(self) -> int:
        return self._batch.size

    async def put(self, events: list[Event], epoch: int, rx: int) -> None:
        """Queue a frame's events; waits while the outbox is full (backpressure)."""
        if self.discarding:
            self.discarded += len(events)
            return
        while self._batch.size >= self.capacity:
            self._space.clear()
            await self._space.wait()
        self._add(events, epoch, rx)

    def put_nowait(self, events: list[Event], epoch: int, rx: int) -> None:
        """Queue control events (status markers) regardless of capacity: they are few."""
        if self.discarding:
            self.discarded += len(events)
            return
        self._add(events, epoch, rx)

    def _add(self, events: list[Event], epoch: int, rx: int) -> None:
        """Into the batch, each under its partition's fence; the gate holds the others."""
        batch, gate = self._batch, self.gate
        for event in events:
            if gate is None:
                batch.add(event, epoch, rx)
            elif (fence := gate.admit(event, epoch, rx)) is not None:
                batch.add(event, epoch, rx)
                batch.fences[event.asset_id] = fence
        if batch.size:
            self._ready.set()

    def poke(self) -> None:
        """Wake the publisher with whatever is queued (perhaps nothing): it has work besides."""
        self._ready.set()

    def quarantine(self, raw: str, reason: str, rx: int) -> None:
        """Queue a raw frame that could not be used."""
        self._batch.quarantine.append({"raw": raw, "reason": reason, "rx": str(rx)})
        self._batch.size += 1
        self._ready.set()

    def market(self, event: MarketEvent, rx: int) -> bool:
        """Queue a lifecycle event once per (kind, market); every shard receives each one."""
        key = (event.kind, event.market)
        if key in self._seen_markets:
            return False
        self._seen_markets.add(key)
        gate = self.gate
        if gate is not None and event.asset_ids and gate.fence(event.asset_ids[0]) is None:
            return True  # new to us, but the writer of its first token's partition writes it
        self._batch.markets.append(encode_market(event, rx=rx))
        self._batch.size += 1
        self._ready.set()
        return True

    async def take(self, limit: int = BATCH_LIMIT) -> Batch:
        """Wait for something queued, then return it as one batch: every quarantined and
        lifecycle entry, and tokens' events, longest-waiting token first, up to `limit` of
        them (the rest stay queued, and the next take returns at once)."""
        await self._ready.wait()
        if self._batch.size <= limit:
            return self.take_nowait()
        return self._split(limit)

    def _split(self, limit: int) -> Batch:
        """The first `limit` token events (a token's rest stays first in line for the next
        write, ahead of its newer events), with every quarantine and lifecycle entry."""
        rest, out = self._batch, Batch()
        for token in list(rest.entries):  # insertion order: the longest-waiting token first
            room = limit - out.size
            if room <= 0:
                break
            entries = rest.entries[token]
            if len(entries) <= room:
                del rest.entries[token]
                if token in rest.fences:
                    out.fences[token] = rest.fences.pop(token)
            else:
                entries, rest.entries[token] = entries[:room], entries[room:]
                if token in rest.fences:
                    out.fences[token] = rest.fences[token]
            out.entries[token] = entries
            out.size += len(entries)
            if token in rest.peek:  # a takeover's first write: the peek goes with it
                rest.peek.discard(token)
                out.peek.add(token)
        out.quarantine, rest.quarantine = rest.quarantine, []
        out.markets, rest.markets = rest.markets, []
        out.size += len(out.quarantine) + len(out.markets)
        rest.size -= out.size
        if not rest.size:  # the limit was only passed with quarantine and lifecycle entries
            self._ready.clear()
        if rest.size < self.capacity:
            self._space.set()
        return out

    def take_nowait(self) -> Batch:
        """Return everything queued (possibly nothing) and make room for producers."""
        batch, self._batch = self._batch, Batch()
        self._ready.clear()
        self._space.set()
        return batch

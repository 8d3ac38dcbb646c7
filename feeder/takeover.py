"""What a standby keeps, and how a new leader finds where the old one stopped. Pure.

A standby folds its own socket's events into its books (the mirror) but publishes nothing; it
keeps each token's recent events here, bounded by count and by age. When it takes a partition
over, the last exchange event the old leader wrote (the stream's last entries, read atomically
with the fencing write) is the anchor: the buffer is searched newest first for an event with
the same identity — type, exchange timestamp and the fields that make it unique (the book
hash of a book or price change, price/size/side of a level or trade) — and everything after
it is published, so a takeover loses no event. No match means the old leader wrote something
this socket never saw (or saw too long ago); then nothing is replayed and the standby's own
book, published as a snapshot right after, makes the book right (docs/ha.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from polybus.wire.events import (
    BestBidAsk,
    Book,
    Event,
    PriceChange,
    Status,
    TickSizeChange,
    Trade,
)


__all__ = ["Held", "StandbyBuffer", "identity"]

Identity = tuple[str, ...]


def identity(event: Event) -> Identity | None:
    """What makes an exchange event the same event on two sockets; None for our statuses and
    for REST books (no socket sees those)."""
    match event:
        case Book(source="ws"):
            return ("book", event.ts, event.hash)
        case PriceChange():
            return ("price_change", event.ts, event.hash, event.side, event.price, event.size)
        case Trade():
            return ("trade", event.ts, event.price, event.size, event.side, event.tx)
        case TickSizeChange():
            return ("tick_size_change", event.ts, event.old, event.new)
        case BestBidAsk():
            return ("best_bid_ask", event.ts, event.best_bid, event.best_ask)
        case Status() | Book():
            return None
    return None


@dataclass(frozen=True, slots=True)
class Held:
    """One event as it would have been published: the event, its socket epoch, receive µs."""

    event: Event
    epoch: int
    rx: int


class StandbyBuffer:
    """Per token, the last `per_token` events received within `horizon_us` (oldest dropped)."""

    def __init__(self, per_token: int = 2000, horizon_us: int = 30_000_000) -> None:
        self.per_token = per_token
        self.horizon_us = horizon_us
        self._held: dict[str, deque[Held]] = {}
        self.dropped = 0
        """Events pushed out by the bounds (too many or too old): counted, never published."""

    def __len__(self) -> int:
        return sum(len(q) for q in self._held.values())

    def hold(self, event: Event, epoch: int, rx: int) -> None:
        """Keep one exchange event of a token this feeder stands by for."""
        if isinstance(event, Status):
            return  # our own connection's markers: a successor writes its own
        queue = self._held.get(event.asset_id)
        if queue is None:
            queue = self._held[event.asset_id] = deque(maxlen=self.per_token)
        if len(queue) == self.per_token:
            self.dropped += 1
        queue.append(Held(event, epoch, rx))
        while queue and queue[0].rx < rx - self.horizon_us:
            queue.popleft()
            self.dropped += 1

    def forget(self, tokens: list[str] | set[str]) -> None:
        """Drop what is held for tokens no longer stood by for."""
        for token in tokens:
            self._held.pop(token, None)

    def after(self, token: str, anchors: list[Event]) -> tuple[list[Held], bool]:
        """Events held for `token` after the newest anchor found in the buffer, and whether one
        was found. `anchors` are the old leader's last entries, newest first."""
        queue = self._held.get(token, deque())
        for anchor in anchors:
            key = identity(anchor)
            if key is None:
                continue  # a status or a REST book: look further back
            for i in range(len(queue) - 1, -1, -1):
                if identity(queue[i].event) == key:
                    return list(queue)[i + 1 :], True
            return [], False  # the newest exchange event written is not here
        return [], False

    def take(self, token: str) -> list[Held]:
        """Everything held for `token`, removed (a token that becomes ours is live from now)."""
        return list(self._held.pop(token, ()))

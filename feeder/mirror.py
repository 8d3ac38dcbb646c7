"""The feeder's own copy of every book it publishes. Pure.

It fills in what legacy `price_change` frames lack (the post-change best bid/ask), and checks
each current-shape `price_change` against the exchange's own `best_bid`/`best_ask` — a free,
causal consistency check (PEERS.md §4 item 2). A token that fails it is reported so the
feeder can mark it suspect and fetch a fresh snapshot.
"""

from __future__ import annotations

from dataclasses import replace

from wire.book import OrderBook
from wire.events import Book, Event, PriceChange


__all__ = ["Mirror"]


def _same_top(reported: str, local: str | None, empty: str) -> bool:
    """Reported top equals ours; an empty side may be reported as "", or "0"/"1" (docs)."""
    if local is None:
        return reported in ("", empty)
    return reported == local


class Mirror:
    """Books by token, and which of them are synced (have had a snapshot)."""

    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        self.synced: set[str] = set()
        self.mismatches = 0

    def book(self, token: str) -> OrderBook:
        book = self.books.get(token)
        if book is None:
            book = self.books[token] = OrderBook(asset_id=token)
        return book

    def unsync(self, tokens: set[str] | list[str]) -> None:
        """These tokens lost their upstream: their books are no longer trusted."""
        self.synced.difference_update(tokens)

    def apply(self, events: list[Event]) -> tuple[list[Event], list[str]]:
        """Fold events in; return them (legacy bests filled in) and tokens that failed a check."""
        out: list[Event] = []
        bad: list[str] = []
        for event in events:
            if isinstance(event, PriceChange):
                event = self._price_change(event, bad)
            elif isinstance(event, Book):
                self.book(event.asset_id).apply(event)
                self.synced.add(event.asset_id)
            out.append(event)
        return out, bad

    def _price_change(self, event: PriceChange, bad: list[str]) -> PriceChange:
        book = self.book(event.asset_id)
        book.apply(event)
        best_bid, best_ask = book.best_bid, book.best_ask
        if not event.best_bid and not event.best_ask:  # legacy shape: no tops given
            return replace(event, best_bid=best_bid or "", best_ask=best_ask or "")
        token = event.asset_id
        if token in self.synced and not (
            _same_top(event.best_bid, best_bid, "0") and _same_top(event.best_ask, best_ask, "1")
        ):
            self.mismatches += 1
            self.synced.discard(token)
            bad.append(token)
        return event

"""The feeder's own copy of every book it publishes. Pure.

It fills in the top of book on every `price_change` from its own fold (`best_bid`/`best_ask`
on the bus are polybus's book after that entry, "" for an empty side, whichever event touched
the book last), and checks the exchange's stated `best_bid`/`best_ask` against that fold — a
free, causal consistency check (PEERS.md §4 item 2). A token that fails it is reported so the
feeder can mark it suspect and fetch a fresh snapshot.

The check waits for the end of a run (PROTOCOL.md §9): in a sweep the exchange states the
post-match top on the first frame while the matched levels are removed one or two frames later
with the same timestamp, so comparing element by element raises a false alarm on every sweep.
A run of same-timestamp `price_change`s for a token is complete when an event with another
timestamp arrives for it, or `grace` seconds after its last frame (`due`); the last stated top
of the run is compared then. A `book` ends the run without a check: it replaces everything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from polybus.wire.book import OrderBook
from polybus.wire.events import Book, Event, PriceChange


__all__ = ["GRACE", "Mirror"]

GRACE = 0.3
"""Seconds after a run's last frame before its stated top is checked (a sweep's removals
follow within milliseconds; a real mismatch must still resync within a second)."""


def _same_top(reported: str, local: str | None, empty: str) -> bool:
    """Reported top equals ours; an empty side is reported as "0" (bids) / "1" (asks), or ""."""
    if local is None:
        return reported in ("", empty)
    return reported == local


@dataclass(slots=True)
class _Run:
    """The exchange's stated top at the end of a token's latest same-timestamp run so far."""

    ts: str
    bid: str
    ask: str
    at: float


class Mirror:
    """Books by token, and which of them are synced (have had a snapshot)."""

    def __init__(self, grace: float = GRACE) -> None:
        self.books: dict[str, OrderBook] = {}
        self.synced: set[str] = set()
        self.mismatches = 0
        self.grace = grace
        self._runs: dict[str, _Run] = {}
        self._newest: dict[str, int] = {}
        """token -> the newest exchange timestamp folded in (ms)."""

    @property
    def pending(self) -> int:
        """Runs not yet checked."""
        return len(self._runs)

    def book(self, token: str) -> OrderBook:
        book = self.books.get(token)
        if book is None:
            book = self.books[token] = OrderBook(asset_id=token)
        return book

    def unsync(self, tokens: set[str] | list[str]) -> None:
        """These tokens lost their upstream: their books are no longer trusted."""
        self.synced.difference_update(tokens)
        for token in tokens:
            self._runs.pop(token, None)

    def older(self, token: str, ts: str) -> bool:
        """True when a snapshot stamped `ts` predates events already folded in (a REST book
        that arrived after newer socket deltas must not roll the book back)."""
        newest = self._newest.get(token)
        return newest is not None and ts.isdigit() and int(ts) < newest

    def apply(self, events: list[Event], now: float = 0.0) -> tuple[list[Event], list[str]]:
        """Fold events in; return them (tops from our own book) and tokens that failed a check.

        Never raises: an event the book cannot fold is dropped and its token reported.
        """
        out: list[Event] = []
        bad: list[str] = []
        for event in events:
            try:
                if isinstance(event, PriceChange):
                    event = self._price_change(event, now, bad)
                elif isinstance(event, Book):
                    self._book(event)
            except (ArithmeticError, ValueError, TypeError, KeyError):
                self.synced.discard(event.asset_id)
                bad.append(event.asset_id)
                continue
            out.append(event)
        return out, bad

    def due(self, now: float) -> list[str]:
        """Check the runs that have been quiet for `grace` seconds; return the tokens whose
        book disagrees with the exchange's stated top."""
        quiet = [t for t, run in self._runs.items() if now - run.at >= self.grace]
        bad: list[str] = []
        for token in quiet:
            self._check(token, self._runs.pop(token), bad)
        return bad

    # --- internals ------------------------------------------------------------------------
    def _book(self, event: Book) -> None:
        self.book(event.asset_id).apply(event)
        self._runs.pop(event.asset_id, None)
        self._stamp(event.asset_id, event.ts)
        self.synced.add(event.asset_id)

    def _price_change(self, event: PriceChange, now: float, bad: list[str]) -> PriceChange:
        token = event.asset_id
        run = self._runs.get(token)
        if run is not None and run.ts != event.ts:  # the previous run is complete
            self._check(token, self._runs.pop(token), bad)
            run = None
        book = self.book(token)
        book.apply(event)
        self._stamp(token, event.ts)
        if event.best_bid or event.best_ask:  # legacy frames state no top: nothing to check
            if run is None:
                self._runs[token] = _Run(event.ts, event.best_bid, event.best_ask, now)
            else:
                run.bid, run.ask, run.at = event.best_bid, event.best_ask, now
        best_bid, best_ask = book.best_bid or "", book.best_ask or ""
        if event.best_bid != best_bid or event.best_ask != best_ask:
            event = replace(event, best_bid=best_bid, best_ask=best_ask)
        return event

    def _check(self, token: str, run: _Run, bad: list[str]) -> None:
        if token not in self.synced:
            return
        book = self.book(token)
        if _same_top(run.bid, book.best_bid, "0") and _same_top(run.ask, book.best_ask, "1"):
            return
        self.mismatches += 1
        self.synced.discard(token)
        bad.append(token)

    def _stamp(self, token: str, ts: str) -> None:
        if ts.isdigit():
            value = int(ts)
            if value > self._newest.get(token, -1):
                self._newest[token] = value

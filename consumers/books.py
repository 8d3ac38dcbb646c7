"""Local state of one subscribed token, rebuilt from its hash and stream. Pure.

A token is loaded from its book hash (levels, `last_id`, `seq`, `status`), then every stream
entry after `last_id` is applied in order (DESIGN.md §2, invariant 1). `apply` raises
SequenceGap when an entry's `seq` is not the next one — entries were trimmed away, or Redis
restarted and numbering began again — and the caller reloads the hash.

Two statuses are kept apart:

- `wire_status` is what the bus says: the hash's `status`, then every entry folded in by
  the table the feeder's Lua step folds by (wire/status_rules.py: `book` → synced,
  `disconnected`/`suspect` → suspect, `connected`/`resubscribed` → a synced book suspect,
  `retired` → retired), so it is always what the hash says after the same entries.
- `doubt` is this client's own reason not to trust the book, whatever the bus says:
  `"reload"` (a gap was seen or Redis was lost: cleared by loading the hash) or `"feeder"`
  (the feeder's health key vanished, or the token's partition has had no live lease for
  longer than the lease time: cleared by the next data entry, or by the same feeder run —
  the same writer's lease — coming back, since either proves the stream kept flowing).

`status` — what the API serves: pending | synced | suspect — is `suspect` while in doubt or
while retired (nothing updates a retired book), else `wire_status`.

A hash that cannot be used (wire's hash codec, `hashes.decode_book`, raises DecodeError: a
field that is not UTF-8, a `seq` or `last_id` that is not one, a status outside
BOOK_STATUSES, a level or last trade that wire's stream codec refuses) is never half-loaded:
the book turns `suspect` (`corrupt`) and keeps what it had until a clean load.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Literal

from polybus.consumers.models import MarketData, OrderBook, PriceLevel
from polybus.wire import hashes, status_rules
from polybus.wire.book import OrderBook as WireBook
from polybus.wire.canon import canon
from polybus.wire.codec import Change
from polybus.wire.errors import DecodeError, SequenceGap
from polybus.wire.events import (
    STATUS_STATES,
    BestBidAsk,
    Book,
    Entry,
    PriceChange,
    Status,
    TickSizeChange,
    Trade,
)


__all__ = ["Callback", "Doubt", "TokenBook"]

Callback = tuple[str, dict[str, Any]]
"""(callback name without `on_`, payload) for the feed to fire."""

Doubt = Literal["", "reload", "feeder"]

_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
_SEQ = re.compile(r"\d{1,20}")


class TokenBook:
    """One token's book, cursor and status."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.book = WireBook(asset_id=token)
        self.wire_status = "pending"
        self.doubt: Doubt = ""
        self.cursor = "0-0"
        """Stream id of the last entry applied (XREAD continues after it)."""
        self.seq: int | None = None
        """seq of the last entry applied; None while unknown (no hash yet)."""
        self.had_book = False
        self.writer = ""
        """The feeder that wrote the book last, as far as known (hash `writer`, entries')."""
        self.market = ""
        self.last_trade: tuple[str, str, str] | None = None
        self.updated = 0.0
        self.rx = 0

    @property
    def status(self) -> str:
        """pending | synced | suspect: whether to trust the book."""
        if self.wire_status == "retired":  # no feeder carries it: nothing updates it
            return "suspect"
        if self.doubt and self.wire_status != "pending":
            return "suspect"
        return self.wire_status

    # --- loading --------------------------------------------------------------------------
    def load(self, raw: Mapping[Any, Any]) -> list[Callback]:
        """Replace everything with what the book hash holds; the callbacks that triggers.
        Raises DecodeError (and changes nothing) if the hash cannot be used."""
        loaded = hashes.decode_book(self.token, raw)
        before = self.status
        if loaded is None:
            self._forget()
        else:
            self._load_fields(loaded)
        if self.doubt == "reload":
            self.doubt = ""
        calls = self._status_change(before, "", "reloaded")
        if self.status == "synced":
            calls.append(("book_update", self.book_payload()))
        return calls

    def _forget(self) -> None:
        """No hash (Redis restarted, or never published): nothing to trust yet."""
        self.book = WireBook(asset_id=self.token, market=self.market)
        self.cursor, self.seq = "0-0", None
        # A book we had and lost is suspect, not pending: pending means "never had one".
        self.wire_status = "suspect" if self.had_book else "pending"

    def _load_fields(self, h: hashes.BookHash) -> None:
        market = h.market or self.market
        book = WireBook(asset_id=self.token, market=market)
        book.replace(h.bids, h.asks)
        trade = (h.last_trade_price, h.last_trade_size, h.last_trade_side)
        self.market, self.book = market, book
        self.last_trade = trade if h.last_trade_price else None
        self.book.hash, self.book.ts, self.book.tick_size = h.hash, h.ts, h.tick_size
        self.wire_status = h.status
        self.writer = h.writer
        self.had_book |= self.wire_status != "pending"
        self.cursor = h.last_id or "0-0"
        self.seq = h.seq
        self.updated = time.time()

    def corrupt(self, reason: str) -> list[Callback]:
        """The hash cannot be used: suspect until a clean load (the levels held stay)."""
        before = self.status
        self.wire_status, self.doubt = "suspect", "reload"
        return self._status_change(before, "", reason)

    def suspect(self, doubt: Doubt, reason: str) -> list[Callback]:
        """Stop trusting the book locally until `doubt` is cleared."""
        before = self.status
        if self.doubt != "reload":  # a pending reload outranks a feeder doubt
            self.doubt = doubt
        return self._status_change(before, "", reason)

    def release(self, reason: str) -> list[Callback]:
        """Drop a feeder doubt: the same feeder run is back, the stream never stopped."""
        before = self.status
        if self.doubt == "feeder":
            self.doubt = ""
        return self._status_change(before, "", reason)

    # --- applying -------------------------------------------------------------------------
    def apply(self, entry: Entry) -> list[Callback]:
        """Fold one stream entry in; return the callbacks it triggers. Raises SequenceGap, or
        DecodeError (before changing anything) for a status state the bus does not have."""
        expected = 1 if self.seq is None else self.seq + 1
        if entry.seq != expected:
            # seq None means no hash when loaded: the stream must then start at seq 1.
            raise SequenceGap(self.token, expected, entry.seq)
        if isinstance(entry.event, Status) and entry.event.state not in STATUS_STATES:
            raise DecodeError(f"status state {entry.event.state!r:.20} is not one of the bus's")
        before = self.status
        self.seq, self.cursor, self.rx = entry.seq, entry.id or self.cursor, entry.rx
        self.writer = entry.writer or self.writer
        self.updated = time.time()
        event = entry.event
        state = event.state if isinstance(event, Status) else ""
        after = status_rules.after(status_rules.kind_of(event.type, state), self.wire_status)
        if isinstance(event, Status):
            self.wire_status = after
            return self._apply_status(event, before)
        if self.doubt == "feeder":
            self.doubt = ""  # data still flows: the stream was never interrupted
        calls = self._apply_data(event)
        self.wire_status = after
        return self._status_change(before, "", event.type) + calls

    def apply_change(self, change: Change, entry_id: str, now: float) -> list[Callback]:
        """`apply` of a price_change entry in wire.codec.decode_change's form (the hot path),
        `now` being time.time(): the same checks, state and callbacks, without building the
        event objects."""
        seq, _, rx, ts, side, price, size, best_bid, best_ask, hash_, writer = change
        expected = 1 if self.seq is None else self.seq + 1
        if seq != expected:
            raise SequenceGap(self.token, expected, seq)
        self.seq, self.cursor, self.rx, self.updated = seq, entry_id or self.cursor, rx, now
        if writer:
            self.writer = writer
        book = self.book
        book.set_canonical(side, price, size)
        book.hash, book.ts = hash_, ts
        payload = {
            "event_type": "price_change",
            "asset_id": self.token,
            "market": self.market,
            "price": price,
            "size": size,
            "side": "BUY" if side == "bid" else "SELL",
            "best_bid": best_bid,
            "best_ask": best_ask,
            "timestamp": ts,
            "hash": hash_,
        }
        if self.wire_status == "synced" and not self.doubt:  # the steady state: stays so
            return [("price_change", payload)]
        before = self.status
        if self.doubt == "feeder":
            self.doubt = ""  # data still flows: the stream was never interrupted
        self.wire_status = status_rules.after("price_change", self.wire_status)
        return [*self._status_change(before, "", "price_change"), ("price_change", payload)]

    def _apply_status(self, event: Status, before: str) -> list[Callback]:
        return [("status", self._status_payload(before, event.state, event.reason, event.ts))]

    def _apply_data(self, event: object) -> list[Callback]:
        if isinstance(event, Book):
            self.book.apply(event)
            self.market = event.market or self.market
            self.had_book = True
            if event.last_trade_price and self.last_trade is None:
                self.last_trade = (event.last_trade_price, "", "")
            return [("book_update", self.book_payload())]
        if isinstance(event, PriceChange):
            self.book.apply(event)
            return [("price_change", self._price_change_payload(event))]
        if isinstance(event, Trade):
            self.last_trade = (canon(event.price), canon(event.size), event.side)
            return [
                (
                    "trade",
                    {
                        "event_type": "last_trade_price",
                        "asset_id": self.token,
                        "market": self.market,
                        "price": event.price,
                        "size": event.size,
                        "side": event.side,
                        "fee_rate_bps": event.fee_rate_bps,
                        "timestamp": event.ts,
                    },
                )
            ]
        if isinstance(event, TickSizeChange):
            self.book.tick_size = event.new
            return [
                (
                    "tick_size_change",
                    {
                        "event_type": "tick_size_change",
                        "asset_id": self.token,
                        "market": self.market,
                        "old_tick_size": event.old,
                        "new_tick_size": event.new,
                        "timestamp": event.ts,
                    },
                )
            ]
        assert isinstance(event, BestBidAsk)  # a cross-check only: nothing to fold
        return []

    def _price_change_payload(self, event: PriceChange) -> dict[str, Any]:
        return {
            "event_type": "price_change",
            "asset_id": self.token,
            "market": self.market,
            "price": event.price,
            "size": event.size,
            "side": "BUY" if event.side == "bid" else "SELL",
            "best_bid": event.best_bid,
            "best_ask": event.best_ask,
            "timestamp": event.ts,
            "hash": event.hash,
        }

    def _status_change(self, before: str, state: str, reason: str) -> list[Callback]:
        if self.status == before:
            return []
        return [("status", self._status_payload(before, state, reason, ""))]

    def _status_payload(self, before: str, state: str, reason: str, ts: str) -> dict[str, Any]:
        return {
            "event_type": "status",
            "asset_id": self.token,
            "status": self.status,
            "previous": before,
            "state": state,
            "reason": reason,
            "timestamp": ts,
        }

    # --- views ----------------------------------------------------------------------------
    def book_payload(self) -> dict[str, Any]:
        """The on_book_update payload: levels best first as {price, size} strings."""
        return {
            "event_type": "book",
            "asset_id": self.token,
            "market": self.market,
            "bids": [{"price": p, "size": s} for p, s in self.book.bids],
            "asks": [{"price": p, "size": s} for p, s in self.book.asks],
            "timestamp": self.book.ts,
            "hash": self.book.hash,
        }

    def order_book(self) -> OrderBook:
        """The seed-shaped OrderBook (best first), carrying the status."""
        return OrderBook(
            token_id=self.token,
            bids=[PriceLevel.of(p, s) for p, s in self.book.bids],
            asks=[PriceLevel.of(p, s) for p, s in self.book.asks],
            timestamp=self.book.ts or None,
            hash=self.book.hash,
            status=self.status,
        )

    def market_data(self) -> MarketData:
        """The seed-shaped MarketData of this token."""
        data = MarketData(
            token_id=self.token,
            order_book=self.order_book(),
            last_update_time=self.updated,
            status=self.status,
            tick_size=self.book.tick_size or "0.01",
            market=self.market,
        )
        if self.last_trade is not None:
            price, size, side = self.last_trade
            data.last_trade_price = data.last_price = float(price)
            data.last_trade_size = float(size) if size else None
            data.last_trade_side = side or None
        return data

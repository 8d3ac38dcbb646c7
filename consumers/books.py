"""Local state of one subscribed token, rebuilt from its hash and stream. Pure.

A token's state is loaded from its book hash (levels, `last_id`, `seq`, `status`), then every
stream entry after `last_id` is applied in order. A `seq` that is not the next one means
entries were missed (trimmed away, Redis restarted): `apply` raises SequenceGap and the caller
reloads the hash. A `status` entry saying the upstream dropped makes the book `suspect`; the
next `book` entry replaces it wholesale and makes it `synced`.
"""

from __future__ import annotations

import time
from typing import Any

from consumers.models import MarketData, OrderBook, PriceLevel
from wire.book import OrderBook as WireBook
from wire.errors import SequenceGap
from wire.events import BestBidAsk, Book, Entry, PriceChange, Status, TickSizeChange, Trade


__all__ = ["Callback", "TokenBook"]

Callback = tuple[str, dict[str, Any]]
"""(callback name, payload) for the feed to fire."""

_UNTRUSTED = ("disconnected", "suspect")


class TokenBook:
    """One token's book, cursor and status."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.book = WireBook(asset_id=token)
        self.status = "pending"
        self.cursor = "0-0"
        self.seq: int | None = None
        """seq of the last entry applied; None while unknown (no hash yet)."""
        self.market = ""
        self.last_trade: tuple[str, str, str] | None = None
        self.updated = 0.0
        self.rx = 0

    # --- loading --------------------------------------------------------------------------
    def load(self, fields: dict[str, str]) -> None:
        """Replace everything with what the book hash holds (an empty hash: nothing yet)."""
        bids = [(k[4:], v) for k, v in fields.items() if k.startswith("bid:")]
        asks = [(k[4:], v) for k, v in fields.items() if k.startswith("ask:")]
        self.book = WireBook(asset_id=self.token, market=fields.get("market", ""))
        self.book.replace(bids, asks)
        self.book.hash, self.book.ts = fields.get("hash", ""), fields.get("ts", "")
        self.book.tick_size = fields.get("tick_size", "")
        self.market = fields.get("market", "")
        self.status = fields.get("status", "pending") if fields else "pending"
        self.cursor = fields.get("last_id", "0-0")
        self.seq = int(fields["seq"]) if fields.get("seq") else None
        price = fields.get("last_trade_price", "")
        self.last_trade = (price, fields.get("last_trade_size", ""),
                           fields.get("last_trade_side", "")) if price else None
        if fields:
            self.updated = time.time()

    # --- applying -------------------------------------------------------------------------
    def apply(self, entry: Entry) -> list[Callback]:
        """Fold one stream entry in; return the callbacks it triggers. Raises SequenceGap."""
        if self.seq is not None and entry.seq != self.seq + 1:
            raise SequenceGap(self.token, self.seq + 1, entry.seq)
        self.seq, self.cursor, self.rx = entry.seq, entry.id or self.cursor, entry.rx
        self.updated = time.time()
        event = entry.event
        if isinstance(event, Book):
            self.book.apply(event)
            self.market = event.market or self.market
            self.status = "synced"
            if event.last_trade_price and self.last_trade is None:
                self.last_trade = (event.last_trade_price, "", "")
            return [("book_update", self.book_payload())]
        if isinstance(event, PriceChange):
            self.book.apply(event)
            return [("price_change", {
                "event_type": "price_change", "asset_id": self.token, "market": self.market,
                "price": event.price, "size": event.size,
                "side": "BUY" if event.side == "bid" else "SELL",
                "best_bid": event.best_bid, "best_ask": event.best_ask,
                "timestamp": event.ts, "hash": event.hash})]
        if isinstance(event, Trade):
            self.last_trade = (event.price, event.size, event.side)
            return [("trade", {
                "event_type": "last_trade_price", "asset_id": self.token, "market": self.market,
                "price": event.price, "size": event.size, "side": event.side,
                "fee_rate_bps": event.fee_rate_bps, "timestamp": event.ts})]
        if isinstance(event, TickSizeChange):
            self.book.tick_size = event.new
            return [("tick_size_change", {
                "event_type": "tick_size_change", "asset_id": self.token, "market": self.market,
                "old_tick_size": event.old, "new_tick_size": event.new, "timestamp": event.ts})]
        if isinstance(event, Status):
            if event.state in _UNTRUSTED:
                self.status = "suspect"
            return [("status", {"asset_id": self.token, "state": event.state,
                                "reason": event.reason, "status": self.status})]
        assert isinstance(event, BestBidAsk)  # a cross-check only: nothing to fold
        return []

    # --- views ----------------------------------------------------------------------------
    def book_payload(self) -> dict[str, Any]:
        """The on_book_update payload: levels best first as {price, size} strings."""
        return {"event_type": "book", "asset_id": self.token, "market": self.market,
                "bids": [{"price": p, "size": s} for p, s in self.book.bids],
                "asks": [{"price": p, "size": s} for p, s in self.book.asks],
                "timestamp": self.book.ts, "hash": self.book.hash}

    def order_book(self) -> OrderBook:
        """The seed-shaped OrderBook (best first), carrying the status."""
        return OrderBook(token_id=self.token,
                         bids=[PriceLevel.of(p, s) for p, s in self.book.bids],
                         asks=[PriceLevel.of(p, s) for p, s in self.book.asks],
                         timestamp=self.book.ts or None, hash=self.book.hash,
                         status=self.status)

    def market_data(self) -> MarketData:
        """The seed-shaped MarketData of this token."""
        data = MarketData(token_id=self.token, order_book=self.order_book(),
                          last_update_time=self.updated, status=self.status,
                          tick_size=self.book.tick_size or "0.01", market=self.market)
        if self.last_trade is not None:
            price, size, side = self.last_trade
            data.last_trade_price = data.last_price = float(price)
            data.last_trade_size = float(size) if size else None
            data.last_trade_side = side or None
        return data

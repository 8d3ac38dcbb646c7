"""The market engine: mirrored YES/NO books and deterministic order flow. Pure.

Prices are integers in 1/10000 ("pips"), sizes in 1/100 shares, so every book is exact and
every step is cheap. Only the YES book is stored: the NO book is its mirror (a NO bid at
1 − p for each YES ask at p, same size), exactly as the exchange's two legs move together.
Every action returns the exchange-format messages it causes (dicts, `event_type` last); the
sequence of actions depends only on the seed and the number of steps.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


__all__ = ["ONE", "Engine", "Market", "fmt_price", "fmt_size"]

ONE = 10_000
"""1.0 in pips."""
COARSE, FINE = 100, 10
"""Tick sizes 0.01 and 0.001 in pips."""
EXTREME_HIGH, EXTREME_LOW = 9_600, 400
"""tick_size_change fires when the price goes above 0.96 or below 0.04."""

Msg = dict[str, Any]
Levels = tuple[tuple[str, str], ...]


def fmt_price(pips: int) -> str:
    """Canonical decimal string of a price in pips (4800 → "0.48", 10 → "0.001")."""
    whole, frac = divmod(pips, ONE)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:04d}".rstrip("0")


def fmt_size(cents: int) -> str:
    """Canonical decimal string of a size in 1/100 shares (31050 → "310.5")."""
    whole, frac = divmod(cents, 100)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:02d}".rstrip("0")


@dataclass
class Market:
    """One binary market; `bids`/`asks` are the YES book (price pips → size cents)."""

    id: str
    condition_id: str
    question: str
    slug: str
    yes: str
    no: str
    tick: int = COARSE
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    last_trade: dict[str, int] = field(default_factory=dict)
    volume: float = 0.0
    active: bool = True
    winner: str = ""

    @property
    def tokens(self) -> tuple[str, str]:
        return (self.yes, self.no)

    def levels(self, token: str) -> tuple[dict[int, int], dict[int, int]]:
        """(bids, asks) of `token`: the YES book, or its mirror for NO."""
        if token == self.yes:
            return self.bids, self.asks
        return ({ONE - p: s for p, s in self.asks.items()},
                {ONE - p: s for p, s in self.bids.items()})

    def best(self, token: str) -> tuple[int | None, int | None]:
        """(best bid, best ask) of a token in pips."""
        bid = max(self.bids) if self.bids else None
        ask = min(self.asks) if self.asks else None
        if token == self.yes:
            return bid, ask
        return (ONE - ask if ask is not None else None, ONE - bid if bid is not None else None)


class Engine:
    """All markets and the random order flow over them."""

    def __init__(self, markets: int = 20, seed: int = 1,
                 clock: Callable[[], int] | None = None) -> None:
        self.rng = random.Random(seed)
        self.clock = clock or _ms
        self.by_token: dict[str, Market] = {}
        self.all: list[Market] = []
        self.steps = 0
        self._hashes = 0
        for _ in range(markets):
            self.add_market()

    # --- queries ------------------------------------------------------------------------
    def markets(self) -> list[Market]:
        """Every market ever created, resolved ones included (see `.active`)."""
        return list(self.all)

    def tokens(self) -> list[str]:
        """Tokens of active markets: YES then NO per market."""
        return [t for m in self.all if m.active for t in m.tokens]

    def true_book(self, token: str) -> tuple[Levels, Levels]:
        """(bids, asks) best first as canonical strings: the truth the feeder must match."""
        bids, asks = self.by_token[token].levels(token)
        return (tuple((fmt_price(p), fmt_size(s)) for p, s in sorted(bids.items(), reverse=True)),
                tuple((fmt_price(p), fmt_size(s)) for p, s in sorted(asks.items())))

    # --- lifecycle ----------------------------------------------------------------------
    def add_market(self) -> Market:
        """Create a market with a seeded book around a random price; returns it."""
        rng, n = self.rng, len(self.all)
        yes, no = (str(rng.randrange(10**76, 10**77)) for _ in range(2))
        mid = rng.choice([rng.randrange(1500, 8500), rng.randrange(600, 1500),
                          rng.randrange(8500, 9400)])
        market = Market(id=str(1_000_000 + n), condition_id="0x" + f"{rng.getrandbits(256):064x}",
                        question=f"Will simulated event #{n} happen?", slug=f"sim-event-{n}",
                        yes=yes, no=no, volume=float(rng.randrange(1_000, 5_000_000)))
        mid -= mid % COARSE
        for k in range(1, 6):
            market.bids[mid - k * COARSE] = rng.randrange(1_000, 100_000)
            market.asks[mid + k * COARSE] = rng.randrange(1_000, 100_000)
        self.all.append(market)
        self.by_token[yes] = self.by_token[no] = market
        return market

    def new_market(self) -> list[Msg]:
        """A market appears: its `new_market` broadcast."""
        return [self._new_market_msg(self.add_market())]

    def resolve(self, market: Market | None = None) -> list[Msg]:
        """A market resolves (random active one by default): its `market_resolved` broadcast."""
        live = [m for m in self.all if m.active]
        if market is None:
            if not live:
                return []
            market = self.rng.choice(live)
        market.active = False
        market.winner = self.rng.choice(market.tokens)
        return [{"id": market.id, "market": market.condition_id,
                 "assets_ids": list(market.tokens), "winning_asset_id": market.winner,
                 "winning_outcome": "Yes" if market.winner == market.yes else "No",
                 "event_message": None, "timestamp": str(self.clock()),
                 "tags": ["Simulated"], "event_type": "market_resolved"}]

    # --- flow ---------------------------------------------------------------------------
    def step(self, n: int = 1) -> list[Msg]:
        """Run n random actions; return every message they caused, in order."""
        out: list[Msg] = []
        live = [m for m in self.all if m.active]
        if not live:
            return out
        rng = self.rng
        for _ in range(n):
            self.steps += 1
            market = live[rng.randrange(len(live))]
            roll = rng.random()
            if roll < 0.45:
                out += self._add(market)
            elif roll < 0.80:
                out += self._cancel(market)
            else:
                out += self._trade(market)
            out += self._maybe_tick_change(market)
        return out

    def _add(self, m: Market) -> list[Msg]:
        rng = self.rng
        buy = rng.random() < 0.5
        bid, ask = m.best(m.yes)
        if buy:
            top = bid if bid is not None else (ask or ONE // 2) - m.tick
            price = top + m.tick if ask is not None and top + m.tick < ask and rng.random() < 0.2 \
                else top - m.tick * rng.randrange(0, 5)
        else:
            top = ask if ask is not None else (bid or ONE // 2) + m.tick
            price = top - m.tick if bid is not None and top - m.tick > bid and rng.random() < 0.2 \
                else top + m.tick * rng.randrange(0, 5)
        if not m.tick <= price <= ONE - m.tick:
            return []
        book = m.bids if buy else m.asks
        book[price] = book.get(price, 0) + rng.randrange(500, 50_000)
        return [self._change(m, buy, price)]

    def _cancel(self, m: Market) -> list[Msg]:
        rng = self.rng
        buy = rng.random() < 0.5
        book = m.bids if buy else m.asks
        if len(book) <= 2:
            return self._add(m)
        price = rng.choice(sorted(book))
        if rng.random() < 0.5:
            del book[price]
        else:
            book[price] = max(1, book[price] - rng.randrange(1, book[price] + 1) // 2)
        return [self._change(m, buy, price)]

    def _trade(self, m: Market) -> list[Msg]:
        """A taker crosses the top; `last_trade_price` then both post-trade books."""
        rng = self.rng
        buy_yes = rng.random() < 0.5
        book = m.asks if buy_yes else m.bids
        if not book:
            return self._add(m)
        price = min(book) if buy_yes else max(book)
        size = min(book[price], rng.randrange(100, 20_000))
        book[price] -= size
        if not book[price]:
            del book[price]
        m.volume += size / 100
        # The same fill seen from NO: buying YES at p is selling NO at 1 − p.
        token = m.yes if rng.random() < 0.7 else m.no
        side = ("BUY" if buy_yes else "SELL") if token == m.yes else ("SELL" if buy_yes else "BUY")
        traded = price if token == m.yes else ONE - price
        m.last_trade[m.yes], m.last_trade[m.no] = (price, ONE - price)
        trade = {"market": m.condition_id, "asset_id": token, "price": fmt_price(traded),
                 "size": fmt_size(size), "fee_rate_bps": "0", "side": side,
                 "timestamp": str(self.clock()), "event_type": "last_trade_price",
                 "transaction_hash": "0x" + f"{rng.getrandbits(256):064x}"}
        return [trade, self.book_msg(m.yes, initial=False), self.book_msg(m.no, initial=False)]

    def _maybe_tick_change(self, m: Market) -> list[Msg]:
        bid, ask = m.best(m.yes)
        if m.tick != COARSE or bid is None or ask is None:
            return []
        if not (bid > EXTREME_HIGH or ask < EXTREME_LOW):
            return []
        m.tick = FINE
        ts = str(self.clock())
        return [{"event_type": "tick_size_change", "asset_id": t, "market": m.condition_id,
                 "old_tick_size": "0.01", "new_tick_size": "0.001", "timestamp": ts}
                for t in m.tokens]

    # --- messages -----------------------------------------------------------------------
    def _hash(self) -> str:
        self._hashes += 1
        return hashlib.sha1(f"{self._hashes}".encode()).hexdigest()

    def _change(self, m: Market, buy_yes: bool, price: int) -> Msg:
        """One price_change with both legs, each with its post-change top of book."""
        size = fmt_size((m.bids if buy_yes else m.asks).get(price, 0))
        legs = []
        for token in m.tokens:
            bid, ask = m.best(token)
            yes = token == m.yes
            legs.append({"asset_id": token, "price": fmt_price(price if yes else ONE - price),
                         "size": size, "side": "BUY" if buy_yes == yes else "SELL",
                         "hash": self._hash(),
                         "best_bid": fmt_price(bid) if bid is not None else "0",
                         "best_ask": fmt_price(ask) if ask is not None else "1"})
        if self.rng.random() < 0.5:  # element order varies live
            legs.reverse()
        return {"market": m.condition_id, "price_changes": legs,
                "timestamp": str(self.clock()), "event_type": "price_change"}

    def book_msg(self, token: str, initial: bool) -> Msg:
        """A `book` of one token, worst first as live; initial ones carry tick and last trade."""
        m = self.by_token[token]
        bids, asks = m.levels(token)
        msg: Msg = {"market": m.condition_id, "asset_id": token, "timestamp": str(self.clock()),
                    "hash": self._hash(),
                    "bids": [{"price": fmt_price(p), "size": fmt_size(s)}
                             for p, s in sorted(bids.items())],
                    "asks": [{"price": fmt_price(p), "size": fmt_size(s)}
                             for p, s in sorted(asks.items(), reverse=True)]}
        if initial:
            msg["tick_size"] = fmt_price(m.tick)
            msg["event_type"] = "book"
            last = m.last_trade.get(token)
            msg["last_trade_price"] = (fmt_price(last) + ("0" if "." in fmt_price(last) else "")
                                       if last is not None else "")
            return msg
        msg["event_type"] = "book"
        return msg

    def best_bid_ask_msg(self, token: str) -> Msg:
        m = self.by_token[token]
        bid, ask = m.best(token)
        spread = fmt_price(ask - bid) if bid is not None and ask is not None else ""
        return {"market": m.condition_id, "asset_id": token,
                "best_bid": fmt_price(bid) if bid is not None else "",
                "best_ask": fmt_price(ask) if ask is not None else "", "spread": spread,
                "timestamp": str(self.clock()), "event_type": "best_bid_ask"}

    def _new_market_msg(self, m: Market) -> Msg:
        return {"id": m.id, "question": m.question, "market": m.condition_id, "slug": m.slug,
                "description": "A simulated market.", "assets_ids": list(m.tokens),
                "outcomes": ["Yes", "No"],
                "event_message": {"id": m.id, "ticker": m.slug, "slug": m.slug,
                                  "title": m.question, "description": "A simulated market."},
                "timestamp": str(self.clock()), "event_type": "new_market", "tags": ["Simulated"],
                "condition_id": m.condition_id, "active": True, "clob_token_ids": list(m.tokens),
                "order_price_min_tick_size": fmt_price(m.tick)}


def _ms() -> int:
    import time

    return time.time_ns() // 1_000_000

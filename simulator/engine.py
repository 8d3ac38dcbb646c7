"""The market engine: many binary markets and a deterministic random order flow. Pure.

Each action (add, cancel or trade on one market) mutates the YES book and returns the
exchange messages it causes, already in wire shape (see `frames`). The sequence of actions,
and so every book and every message except timestamps, depends only on the seed and the
number of steps: the one random generator is consumed in a fixed order.

Prices are integer pips and sizes integer cents (`units`), so books are exact and cheap.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable

from simulator import frames
from simulator.frames import Msg
from simulator.market import Market, Top
from simulator.units import COARSE, FINE, ONE, fmt_price, fmt_size


__all__ = ["Engine", "Levels"]

Levels = tuple[tuple[str, str], ...]

TO_FINE_ABOVE, TO_FINE_BELOW = 9_600, 400
"""The tick becomes 0.001 when a best bid goes above 0.96 or a best ask below 0.04."""
TO_COARSE_BELOW, TO_COARSE_ABOVE = 9_560, 440
"""…and back to 0.01 once the top is inside 0.044–0.956 again (a little hysteresis)."""
MIN_DEPTH, MAX_DEPTH = 3, 14
"""Levels per side the flow keeps: cancels never thin a side below MIN_DEPTH, and prefer far
levels above MAX_DEPTH, so books stay several levels deep without growing forever."""

SUBJECTS = ("the Fed cut rates", "BTC close above $150k", "a new Pope be named",
            "Team Red win the final", "the bill pass the Senate", "GDP growth exceed 3%",
            "the launch succeed", "turnout exceed 60%", "the merger close", "it snow in Paris")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    """All markets, their books and the random flow over them."""

    def __init__(self, markets: int = 20, seed: int = 1, *,
                 clock: Callable[[], int] | None = None, new_market_every: int = 0,
                 resolve_every: int = 0, v2_fraction: float = 0.0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = clock or _now_ms
        self.new_market_every = new_market_every
        """Steps between new markets (0 = never)."""
        self.resolve_every = resolve_every
        """Steps between resolutions (0 = never)."""
        self.v2_fraction = v2_fraction
        self.by_token: dict[str, Market] = {}
        self.steps = 0
        self.sink: Callable[[list[Msg]], None] | None = None
        """Called with the messages of every step/lifecycle call (the server broadcasts)."""
        self._all: list[Market] = []
        self._live: list[Market] = []
        self._seq = 0
        for _ in range(markets):
            self._create()

    # --- queries ------------------------------------------------------------------------
    def markets(self) -> list[Market]:
        """Every market ever created, resolved ones included (see `.active`)."""
        return list(self._all)

    def tokens(self) -> list[str]:
        """Tokens of active markets: YES then NO per market."""
        return [t for m in self._live for t in m.tokens]

    def market(self, token: str) -> Market | None:
        return self.by_token.get(token)

    def true_book(self, token: str) -> tuple[Levels, Levels]:
        """(bids, asks) best first in canonical strings: what a faithful client must hold."""
        bids, asks = self.by_token[token].levels(token)
        return (tuple((fmt_price(p), fmt_size(s)) for p, s in sorted(bids.items(), reverse=True)),
                tuple((fmt_price(p), fmt_size(s)) for p, s in sorted(asks.items())))

    def book_msg(self, token: str, initial: bool = True) -> Msg:
        """A `book` message for `token` now (snapshots for subscribers, REST)."""
        return frames.book(self.by_token[token], token, str(self.clock()),
                           self._book_hash(token), initial)

    # --- flow ---------------------------------------------------------------------------
    def step(self, n: int = 1) -> list[Msg]:
        """Run n actions; return (and hand to `sink`) every message they caused, in order."""
        out: list[Msg] = []
        rng = self.rng
        for _ in range(n):
            self.steps += 1
            if self.new_market_every and self.steps % self.new_market_every == 0:
                self._new_market(out)
            if self.resolve_every and self.steps % self.resolve_every == 0:
                self._resolve(None, out)
            if self._live:
                self._act(self._live[rng.randrange(len(self._live))], out)
        self._emit(out)
        return out

    def new_market(self) -> list[Msg]:
        """A market appears now: its `new_market` broadcast."""
        out: list[Msg] = []
        self._new_market(out)
        self._emit(out)
        return out

    def resolve(self, market: Market | None = None) -> list[Msg]:
        """A market (a random live one by default) resolves: its `market_resolved` broadcast."""
        out: list[Msg] = []
        self._resolve(market, out)
        self._emit(out)
        return out

    def _emit(self, out: list[Msg]) -> None:
        if out and self.sink is not None:
            self.sink(out)

    def _act(self, m: Market, out: list[Msg]) -> None:
        ts = str(self.clock())
        before = m.top()
        roll = self.rng.random()
        if roll < 0.5:
            self._add(m, before, ts, out)
        elif roll < 0.85:
            self._cancel(m, before, ts, out)
        else:
            self._trade(m, before, ts, out)
        self._retick(m, ts, out)
        if m.top() != before:  # both legs' tops move together
            out.append(frames.best_bid_ask(m, m.yes, ts))
            out.append(frames.best_bid_ask(m, m.no, ts))

    def _add(self, m: Market, top: Top, ts: str, out: list[Msg]) -> None:
        """A resting order near the top (sometimes improving it), never crossing."""
        rng, tick = self.rng, m.tick
        buy = rng.random() < 0.5
        bid, ask = top
        improve = bid is not None and ask is not None and ask - bid > tick and rng.random() < 0.25
        if buy:
            if bid is None:
                price = (ONE // 2 if ask is None else ask) - tick
            else:
                price = bid + tick if improve else bid - tick * rng.randrange(6)
        elif ask is None:
            price = (ONE // 2 if bid is None else bid) + tick
        else:
            price = ask - tick if improve else ask + tick * rng.randrange(6)
        size = rng.randrange(500, 60_000) if rng.random() < 0.9 else rng.randrange(60_000, 900_000)
        if not tick <= price <= ONE - tick:
            return
        book = m.bids if buy else m.asks
        book[price] = book.get(price, 0) + size
        out.append(self._change(m, buy, price, book[price], ts))

    def _cancel(self, m: Market, top: Top, ts: str, out: list[Msg]) -> None:
        """A resting order leaves: a level shrinks or disappears (size "0")."""
        rng = self.rng
        buy = rng.random() < 0.5
        book = m.bids if buy else m.asks
        if len(book) <= MIN_DEPTH:
            self._add(m, top, ts, out)
            return
        prices = sorted(book, reverse=buy)  # best first
        deep = len(prices) > MAX_DEPTH
        price = prices[rng.randrange(len(prices) // 2 if deep else 0, len(prices))]
        size = book[price]
        if deep or size < 2 or rng.random() < 0.5:
            del book[price]
            size = 0
        else:
            size -= rng.randrange(1, size)
            book[price] = size
        out.append(self._change(m, buy, price, size, ts))

    def _trade(self, m: Market, top: Top, ts: str, out: list[Msg]) -> None:
        """A taker crosses the top: `last_trade_price`, then both post-trade books."""
        rng = self.rng
        lean = 0.5
        if m.tick == FINE:  # extreme prices drift back now and then, so ticks go back too
            lean = 0.3 if (top[0] or 0) > ONE // 2 else 0.7
        buy_yes = rng.random() < lean
        book = m.asks if buy_yes else m.bids
        if len(book) < MIN_DEPTH:
            self._add(m, top, ts, out)
            return
        price = top[1] if buy_yes else top[0]
        assert price is not None
        avail = book[price]
        size = avail if avail < 2 or rng.random() < 0.35 else rng.randrange(1, avail)
        if size == avail:
            del book[price]
        else:
            book[price] = avail - size
        m.last_trade, m.last_side = price, "BUY" if buy_yes else "SELL"
        m.volume += size / 100
        m.volume24hr = round(m.volume24hr + size * price / 1_000_000, 2)
        # The same fill seen from NO: buying YES at p is selling NO at 1 − p.
        on_no = rng.random() < 0.3
        side = ("SELL" if buy_yes else "BUY") if on_no else m.last_side
        token = m.no if on_no else m.yes
        traded = ONE - price if on_no else price
        tx = f"0x{rng.getrandbits(256):064x}"
        out.append(frames.last_trade_price(m, token, traded, size, side, ts, tx))
        out.append(frames.book(m, m.yes, ts, self._book_hash(m.yes), initial=False))
        out.append(frames.book(m, m.no, ts, self._book_hash(m.no), initial=False))

    def _retick(self, m: Market, ts: str, out: list[Msg]) -> None:
        """Change the tick at the extremes (0.01 → 0.001) and back, for both tokens."""
        bid, ask = m.top()
        if m.tick == COARSE:
            if not ((bid is not None and bid > TO_FINE_ABOVE)
                    or (ask is not None and ask < TO_FINE_BELOW)):
                return
            new = FINE
        else:
            if (bid is not None and bid > TO_COARSE_BELOW) or (
                    ask is not None and ask < TO_COARSE_ABOVE):
                return
            new = COARSE
            # Orders off the coarse grid cannot rest any more: they are cancelled first.
            for buy, book in ((True, m.bids), (False, m.asks)):
                for price in sorted(p for p in book if p % COARSE):
                    del book[price]
                    out.append(self._change(m, buy, price, 0, ts))
        old, m.tick = m.tick, new
        out.append(frames.tick_size_change(m, m.yes, old, new, ts))
        out.append(frames.tick_size_change(m, m.no, old, new, ts))

    def _change(self, m: Market, buy: bool, price: int, size: int, ts: str) -> Msg:
        """The price_change of one YES level, with the NO mirror leg (random element order)."""
        self._seq += 1
        base = f"{self.seed}:{self._seq}:{price}:{size}:{buy}".encode()
        hashes = (hashlib.sha1(b"Y" + base).hexdigest(), hashlib.sha1(b"N" + base).hexdigest())
        return frames.price_change(m, buy, price, size, ts, hashes, self.rng.random() < 0.5)

    def _book_hash(self, token: str) -> str:
        # Depends on the state counter only, so asking for a snapshot never perturbs the flow.
        return hashlib.sha1(f"{token}:{self._seq}:{self.steps}".encode()).hexdigest()

    # --- lifecycle ----------------------------------------------------------------------
    def _token_id(self) -> str:
        digits = self.rng.choice((76, 77, 78))
        return str(self.rng.randrange(10 ** (digits - 1), 10**digits))

    def _create(self) -> Market:
        """A new market with a seeded book several levels deep around a random price."""
        rng, i = self.rng, len(self._all)
        yes, no = self._token_id(), self._token_id()
        cond = f"0x{rng.getrandbits(256):064x}"
        subject = SUBJECTS[i % len(SUBJECTS)]
        # A fixed low-discrepancy sequence, so the v2 share is exact and costs no randomness.
        version = "v2" if (i * 0.6180339887) % 1.0 < self.v2_fraction else "v1"
        m = Market(index=i, id=str(500_000 + i), condition_id=cond,
                   question=f"Will {subject} (sim #{i})?", slug=f"sim-{i}-will-{subject}"
                   .replace(" ", "-").replace("$", "").replace("%", "pct").lower(),
                   yes=yes, no=no, volume24hr=round(rng.lognormvariate(10, 1.5), 2),
                   version=version)
        self._seed_book(m)
        self._all.append(m)
        self._live.append(m)
        self.by_token[yes] = self.by_token[no] = m
        return m

    def _seed_book(self, m: Market) -> None:
        rng = self.rng
        kind = rng.random()
        if kind < 0.7:
            mid = rng.randrange(1_500, 8_500)
        elif kind < 0.85:
            mid = rng.choice((rng.randrange(600, 1_500), rng.randrange(8_500, 9_400)))
        else:
            mid = rng.choice((rng.randrange(9_300, 9_700), rng.randrange(300, 700)))
        m.tick = FINE if mid > 9_650 or mid < 350 else COARSE
        mid -= mid % m.tick
        half = m.tick * rng.randrange(1, 3)
        for buy, book in ((True, m.bids), (False, m.asks)):
            price = mid - half if buy else mid + half
            for _ in range(rng.randrange(4, 9)):
                if m.tick <= price <= ONE - m.tick:
                    book[price] = rng.randrange(1_000, 150_000)
                price += (-m.tick if buy else m.tick) * (2 if rng.random() < 0.2 else 1)

    def _new_market(self, out: list[Msg]) -> None:
        m = self._create()
        out.append(frames.new_market(m, str(self.clock())))

    def _resolve(self, market: Market | None, out: list[Msg]) -> None:
        if market is None:
            if len(self._live) < 2:  # keep at least one market trading
                return
            market = self._live[self.rng.randrange(len(self._live))]
        if not market.active:
            return
        bid, ask = market.top()
        mid = ((bid or 0) + (ask or ONE)) // 2
        market.active = False
        market.winner = market.yes if mid >= ONE // 2 else market.no
        self._live.remove(market)
        out.append(frames.market_resolved(market, str(self.clock())))

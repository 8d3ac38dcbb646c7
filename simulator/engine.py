"""The market engine: many binary markets and a deterministic random order flow. Pure.

Each action (add, cancel or trade on one market) mutates the YES book and returns the
exchange messages it causes, already in wire shape (see `frames`). The sequence of actions,
and so every book and every message except timestamps, depends only on the seed and the
number of steps: the one random generator is consumed in a fixed order.

Prices are integer pips and sizes integer cents (`units`), so books are exact and cheap.

A trade goes out as the exchange sends it (PROTOCOL.md §9): the `price_change` of the level(s)
taken, a post-trade `book` of the traded token, one of the other leg (each with the hash and
timestamp of its leg's last element), and the `last_trade_price` `ltp_delay_ms` later on the
engine clock. The engine holds those back and emits them with the first step (or `release`)
whose clock has reached them, so the flow itself stays a pure function of the seed.
"""

from __future__ import annotations

import collections
import hashlib
import random
import time
from collections.abc import Callable

from polybus.simulator import frames
from polybus.simulator.frames import Msg
from polybus.simulator.market import Market, Top
from polybus.simulator.units import COARSE, FINE, ODD_TICKS, ONE, fmt_price, fmt_size


__all__ = ["Engine", "Levels"]

Levels = tuple[tuple[str, str], ...]

TO_FINE_ABOVE, TO_FINE_BELOW = 9_600, 400
"""The tick becomes 0.001 when a best bid goes above 0.96 or a best ask below 0.04."""
TO_COARSE_BELOW, TO_COARSE_ABOVE = 9_560, 440
"""…and back to 0.01 once the top is inside 0.044–0.956 again (a little hysteresis)."""
MIN_DEPTH, MAX_DEPTH = 3, 14
"""Levels per side the flow keeps: cancels never thin a side below MIN_DEPTH, and prefer far
levels above MAX_DEPTH, so books stay several levels deep without growing forever."""
SWEEP_LEVELS = (2, 3)
"""A sweep takes this many whole levels (it needs MIN_DEPTH more to leave the side deep)."""

SUBJECTS = (
    "the Fed cut rates",
    "BTC close above $150k",
    "a new Pope be named",
    "Team Red win the final",
    "the bill pass the Senate",
    "GDP growth exceed 3%",
    "the launch succeed",
    "turnout exceed 60%",
    "the merger close",
    "it snow in Paris",
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    """All markets, their books and the random flow over them."""

    def __init__(
        self,
        markets: int = 20,
        seed: int = 1,
        *,
        clock: Callable[[], int] | None = None,
        new_market_every: int = 0,
        resolve_every: int = 0,
        v2_fraction: float = 0.0,
        sweep_share: float = 0.25,
        ltp_delay_ms: int = 35,
        odd_ticks: float = 0.0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = clock or _now_ms
        self.new_market_every = new_market_every
        """Steps between new markets (0 = never)."""
        self.resolve_every = resolve_every
        """Steps between resolutions (0 = never)."""
        self.v2_fraction = v2_fraction
        self.sweep_share = sweep_share
        """Share of trades that sweep 2–3 whole levels (one price_change per level)."""
        self.ltp_delay_ms = ltp_delay_ms
        """How long after its books a trade's `last_trade_price` goes out (live: ~35 ms)."""
        self.odd_ticks = odd_ticks
        """Share of markets trading on a 0.005 or 0.0025 tick (fixed: no 0.96/0.04 retick)."""
        self.pending: collections.deque[tuple[int, Msg]] = collections.deque()
        """(due clock ms, message): `last_trade_price`s held back until the clock reaches them."""
        self._state: dict[str, tuple[str, str]] = {}
        """token → (hash, timestamp) of its book's last change: what the exchange stamps on a
        `book` (initial, post-trade or REST)."""
        self._odd = 0
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
        return (
            tuple((fmt_price(p), fmt_size(s)) for p, s in sorted(bids.items(), reverse=True)),
            tuple((fmt_price(p), fmt_size(s)) for p, s in sorted(asks.items())),
        )

    def book_msg(self, token: str, initial: bool = True) -> Msg:
        """A `book` message for `token` now (snapshots for subscribers, REST), stamped with
        the hash and timestamp of the book's last change, as live."""
        digest, ts = self._state[token]
        return frames.book(self.by_token[token], token, ts, digest, initial)

    def book_state(self, token: str) -> tuple[str, str]:
        """(hash, timestamp) of the token's book as the exchange states them now."""
        return self._state[token]

    # --- flow ---------------------------------------------------------------------------
    def step(self, n: int = 1) -> list[Msg]:
        """Run n actions; return (and hand to `sink`) every message they caused, in order."""
        out: list[Msg] = []
        rng = self.rng
        for _ in range(n):
            if self.pending:
                self._release(self.clock(), out)
            self.steps += 1
            if self.new_market_every and self.steps % self.new_market_every == 0:
                self._new_market(out)
            if self.resolve_every and self.steps % self.resolve_every == 0:
                self._resolve(None, out)
            if self._live:
                self._act(self._live[rng.randrange(len(self._live))], out)
        self._emit(out)
        return out

    def release(self, until: int | None = None) -> list[Msg]:
        """Emit the held-back messages due by `until` (default: the clock now); the server
        calls this on a timer, so trades reach clients while the flow is paused or slow."""
        out: list[Msg] = []
        self._release(self.clock() if until is None else until, out)
        self._emit(out)
        return out

    def flush(self) -> list[Msg]:
        """Emit every held-back message now, due or not."""
        return self.release(until=2**63)

    def _release(self, now: int, out: list[Msg]) -> None:
        pending = self.pending
        while pending and pending[0][0] <= now:
            out.append(pending.popleft()[1])

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

    def sweep(self, market: Market | None = None) -> list[Msg]:
        """A taker sweeps 2–3 levels of a market now (a random live one by default), when a
        side is deep enough; otherwise an order is added. Returns the messages, as `step`."""
        out: list[Msg] = []
        if market is None and self._live:
            market = self._live[self.rng.randrange(len(self._live))]
        if market is not None and market.active:
            self._act(market, out, force=self._trade_sweep)
        self._emit(out)
        return out

    def _emit(self, out: list[Msg]) -> None:
        if out and self.sink is not None:
            self.sink(out)

    def _act(
        self,
        m: Market,
        out: list[Msg],
        force: Callable[[Market, Top, str, list[Msg]], None] | None = None,
    ) -> None:
        ts = str(self.clock())
        before = m.top()
        if force is not None:
            force(m, before, ts, out)
        else:
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

    def _trade_sweep(self, m: Market, top: Top, ts: str, out: list[Msg]) -> None:
        self._trade(m, top, ts, out, force_sweep=True)

    def _trade(
        self, m: Market, top: Top, ts: str, out: list[Msg], force_sweep: bool = False
    ) -> None:
        """A taker crosses the top: the price_change(s) of the level(s) taken, both post-trade
        books, and (held back `ltp_delay_ms`) one `last_trade_price` per level filled."""
        rng = self.rng
        lean = 0.5
        if m.tick == FINE:  # extreme prices drift back now and then, so ticks go back too
            lean = 0.3 if (top[0] or 0) > ONE // 2 else 0.7
        buy_yes = rng.random() < lean
        # The flow sweeps only deep sides; on demand, any side keeping one level after two.
        deep = SWEEP_LEVELS[0] + 1 if force_sweep else MIN_DEPTH + SWEEP_LEVELS[-1]
        if force_sweep and len(m.asks if buy_yes else m.bids) < deep:
            buy_yes = not buy_yes
        book = m.asks if buy_yes else m.bids
        if len(book) < (deep if force_sweep else MIN_DEPTH):
            self._add(m, top, ts, out)
            return
        on_no = rng.random() < 0.3  # the fill as the NO side sees it: selling NO at 1 − p
        sweep = force_sweep or (
            self.sweep_share > 0 and len(book) >= deep and rng.random() < self.sweep_share
        )
        if sweep:
            fills = self._sweep(m, buy_yes, on_no, ts, out)
        else:
            price = top[1] if buy_yes else top[0]
            assert price is not None
            avail = book[price]
            size = avail if avail < 2 or rng.random() < 0.35 else rng.randrange(1, avail)
            left = avail - size
            if left:
                book[price] = left
            else:
                del book[price]
            hashes = self._hashes(m, not buy_yes, price, left, ts)
            out.append(frames.price_change(m, not buy_yes, price, left, ts, hashes, not on_no))
            fills = [(price, size)]
        m.last_side = "BUY" if buy_yes else "SELL"
        traded, other = (m.no, m.yes) if on_no else (m.yes, m.no)
        for token in (traded, other):
            digest, _ = self._state[token]
            out.append(frames.book(m, token, ts, digest, initial=False))
        side = ("SELL" if buy_yes else "BUY") if on_no else m.last_side
        due = int(ts) + self.ltp_delay_ms
        for price, size in fills:
            m.last_trade = price
            m.volume += size / 100
            m.volume24hr = round(m.volume24hr + size * price / 1_000_000, 2)
            tx = f"0x{rng.getrandbits(256):064x}"
            msg = frames.last_trade_price(
                m, traded, ONE - price if on_no else price, size, side, str(due), tx
            )
            self.pending.append((due, msg))

    def _sweep(
        self, m: Market, buy_yes: bool, on_no: bool, ts: str, out: list[Msg]
    ) -> list[tuple[int, int]]:
        """Take 2–3 whole levels; sometimes the taker's rest stays on the book at its limit.

        Rendered as one price_change per removed level (then the resting rest), all with one
        timestamp and the per-leg hashes of the final book, each stating the top after its
        own element: consistent. The `sweeps` fault restates them the way live does."""
        rng = self.rng
        book, opposite = (m.asks, m.bids) if buy_yes else (m.bids, m.asks)
        count = min(rng.choice(SWEEP_LEVELS), len(book) - 1)
        taken = sorted(book, reverse=not buy_yes)[:count]  # best first
        rest = rng.randrange(500, 20_000) if rng.random() < 0.5 else 0
        limit = taken[-1]
        hashes = self._hashes(m, buy_yes, limit, rest, ts)
        fills = []
        for price in taken:
            fills.append((price, book.pop(price)))
            out.append(frames.price_change(m, not buy_yes, price, 0, ts, hashes, not on_no))
        if rest:  # every level up to the limit is gone, so the rest crosses nothing
            opposite[limit] = rest
            out.append(frames.price_change(m, buy_yes, limit, rest, ts, hashes, not on_no))
        return fills

    def _retick(self, m: Market, ts: str, out: list[Msg]) -> None:
        """Change the tick at the extremes (0.01 → 0.001) and back, for both tokens."""
        if m.fixed_tick:
            return
        bid, ask = m.top()
        if m.tick == COARSE:
            if not (
                (bid is not None and bid > TO_FINE_ABOVE)
                or (ask is not None and ask < TO_FINE_BELOW)
            ):
                return
            new = FINE
        else:
            if (bid is not None and bid > TO_COARSE_BELOW) or (
                ask is not None and ask < TO_COARSE_ABOVE
            ):
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
        hashes = self._hashes(m, buy, price, size, ts)
        return frames.price_change(m, buy, price, size, ts, hashes, self.rng.random() < 0.5)

    def _hashes(self, m: Market, buy: bool, price: int, size: int, ts: str) -> tuple[str, str]:
        """(YES, NO) hashes of the books after a change, now also their stated state.

        They depend on a change counter only (no randomness), so asking for snapshots never
        perturbs the flow."""
        self._seq += 1
        base = f"{self.seed}:{self._seq}:{price}:{size}:{buy}".encode()
        hashes = (hashlib.sha1(b"Y" + base).hexdigest(), hashlib.sha1(b"N" + base).hexdigest())
        self._state[m.yes], self._state[m.no] = (hashes[0], ts), (hashes[1], ts)
        return hashes

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
        m = Market(
            index=i,
            id=str(500_000 + i),
            condition_id=cond,
            question=f"Will {subject} (sim #{i})?",
            slug=f"sim-{i}-will-{subject}".replace(" ", "-")
            .replace("$", "")
            .replace("%", "pct")
            .lower(),
            yes=yes,
            no=no,
            volume24hr=round(rng.lognormvariate(10, 1.5), 2),
            version=version,
        )
        if (i * 0.7548776662) % 1.0 < self.odd_ticks:  # the same trick, another sequence
            m.tick, m.fixed_tick = ODD_TICKS[self._odd % 2], True
            self._odd += 1
        self._seed_book(m)
        ts = str(self.clock())
        for token in m.tokens:
            digest = hashlib.sha1(f"{self.seed}:{token}:listed".encode()).hexdigest()
            self._state[token] = (digest, ts)
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
        if not m.fixed_tick:
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

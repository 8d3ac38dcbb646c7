"""An order book of one token: canonical decimal prices, snapshot/delta, top of book.

Prices are kept as canonical strings (the bus's form) with a sorted Decimal index beside them,
so a delta costs O(log n) + an insert and the best levels are O(1). Pure: no I/O.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from decimal import Decimal

from polybus.wire.canon import canon
from polybus.wire.events import Book, Level, PriceChange, Side


__all__ = ["OrderBook"]

_ZERO = Decimal(0)
_TWO = Decimal(2)


def _fmt(value: Decimal) -> str:
    """Canonical string of a computed Decimal."""
    return canon(format(value, "f"))


_DECIMALS: dict[str, Decimal] = {}


def _decimal(price: str) -> Decimal:
    """Decimal of a canonical price, cached: books revisit the same few hundred prices."""
    value = _DECIMALS.get(price)
    if value is None:
        if len(_DECIMALS) > 100_000:
            _DECIMALS.clear()
        value = _DECIMALS[price] = Decimal(price)
    return value


class _Ladder:
    """One side's levels: price -> size, and prices sorted ascending as (Decimal, str)."""

    __slots__ = ("index", "sizes")

    def __init__(self) -> None:
        self.sizes: dict[str, str] = {}
        self.index: list[tuple[Decimal, str]] = []

    def replace(self, levels: Iterable[Level]) -> None:
        self.sizes = {}
        for price, size in levels:
            p, s = canon(price), canon(size)
            if s != "0":
                self.sizes[p] = s
        self.index = sorted((_decimal(p), p) for p in self.sizes)

    def set(self, price: str, size: str) -> None:
        self.set_canonical(canon(price), canon(size))

    def set_canonical(self, p: str, s: str) -> None:
        present = p in self.sizes
        if s == "0":
            if present:
                del self.sizes[p]
                del self.index[bisect_left(self.index, (_decimal(p), p))]
            return
        self.sizes[p] = s
        if not present:
            key = (_decimal(p), p)
            self.index.insert(bisect_left(self.index, key), key)


class OrderBook:
    """The book of one token. Bids and asks are served best first."""

    __slots__ = ("_asks", "_bids", "asset_id", "hash", "market", "tick_size", "ts")

    def __init__(self, asset_id: str = "", market: str = "") -> None:
        self.asset_id = asset_id
        self.market = market
        self.hash = ""
        self.ts = ""
        self.tick_size = ""
        self._bids = _Ladder()
        self._asks = _Ladder()

    # --- changes -------------------------------------------------------------------------
    def replace(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace both sides wholesale (a snapshot); zero-size levels are dropped."""
        self._bids.replace(bids)
        self._asks.replace(asks)

    def set_level(self, side: Side, price: str, size: str) -> None:
        """Set one level to a new absolute size; size 0 removes it."""
        (self._bids if side == "bid" else self._asks).set(price, size)

    def set_canonical(self, side: Side, price: str, size: str) -> None:
        """set_level of a price and size already canonical (decoded from the bus: the hot
        path, which need not look them up again)."""
        (self._bids if side == "bid" else self._asks).set_canonical(price, size)

    def apply(self, event: object) -> None:
        """Fold a Book or PriceChange into the book; other events leave the levels alone."""
        if isinstance(event, Book):
            self.replace(event.bids, event.asks)
            self.market = event.market or self.market
            self.hash, self.ts = event.hash, event.ts
            self.tick_size = event.tick_size or self.tick_size
        elif isinstance(event, PriceChange):
            self.set_level(event.side, event.price, event.size)
            self.hash, self.ts = event.hash, event.ts

    # --- views ---------------------------------------------------------------------------
    @property
    def bids(self) -> list[Level]:
        """Bid levels, highest price first."""
        sizes = self._bids.sizes
        return [(p, sizes[p]) for _, p in reversed(self._bids.index)]

    @property
    def asks(self) -> list[Level]:
        """Ask levels, lowest price first."""
        sizes = self._asks.sizes
        return [(p, sizes[p]) for _, p in self._asks.index]

    def size_at(self, side: Side, price: str) -> str | None:
        """Size at a price, or None when there is no level."""
        return (self._bids if side == "bid" else self._asks).sizes.get(canon(price))

    @property
    def best_bid(self) -> str | None:
        index = self._bids.index
        return index[-1][1] if index else None

    @property
    def best_ask(self) -> str | None:
        index = self._asks.index
        return index[0][1] if index else None

    @property
    def midpoint(self) -> str | None:
        """(best bid + best ask) / 2, or None when a side is empty."""
        if not (self._bids.index and self._asks.index):
            return None
        return _fmt((self._bids.index[-1][0] + self._asks.index[0][0]) / _TWO)

    @property
    def spread(self) -> str | None:
        """best ask - best bid, or None when a side is empty."""
        if not (self._bids.index and self._asks.index):
            return None
        return _fmt(self._asks.index[0][0] - self._bids.index[-1][0])

    @property
    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (transient on Polymarket)."""
        if not (self._bids.index and self._asks.index):
            return False
        return self._bids.index[-1][0] >= self._asks.index[0][0]

    def __len__(self) -> int:
        return len(self._bids.sizes) + len(self._asks.sizes)

    def snapshot(self, source: str = "ws") -> Book:
        """This book as a Book event."""
        return Book(
            asset_id=self.asset_id,
            market=self.market,
            ts=self.ts,
            bids=tuple(self.bids),
            asks=tuple(self.asks),
            hash=self.hash,
            source=source,
            tick_size=self.tick_size,
        )

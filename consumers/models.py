"""The seed's public data types, kept compatible: ConnectionState, PriceLevel, OrderBook,
MarketData. Prices and sizes are floats here because the seed's API had them so; the exact
canonical strings from the bus stay available (`PriceLevel.price_str`, `.size_str`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

from polybus.wire.errors import ConfigError
from polybus.wire.events import ConnectionState


__all__ = [
    "ConnectionState",
    "MarketData",
    "OrderBook",
    "PriceLevel",
    "stale_data_threshold",
]

DEFAULT_STALE_DATA_THRESHOLD = 60.0
"""The seed's default. (Its `WS_STALE_DATA_THRESHOLD` constant lived in the seed's own
config module; here the setting is read when `is_stale` asks, never at import.)"""


def stale_data_threshold() -> float:
    """Seconds without an update after which MarketData.is_stale: WS_STALE_DATA_THRESHOLD
    (the seed's setting), read when asked, not at import — so `.env`, loaded later, counts."""
    text = os.environ.get("WS_STALE_DATA_THRESHOLD", "").strip()
    if not text:
        return DEFAULT_STALE_DATA_THRESHOLD
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(f"WS_STALE_DATA_THRESHOLD={text!r}: must be a number > 0")
    return value


@dataclass(frozen=True, slots=True)
class PriceLevel:
    """One level: price and size as floats (seed API), plus the exact strings."""

    price: float
    size: float
    price_str: str = ""
    size_str: str = ""

    @classmethod
    def of(cls, price: str, size: str) -> PriceLevel:
        return cls(float(price), float(size), price, size)


@dataclass(slots=True)
class OrderBook:
    """A token's book, bids and asks best first; `status` says whether to trust it."""

    token_id: str
    bids: list[PriceLevel] = field(default_factory=list)
    asks: list[PriceLevel] = field(default_factory=list)
    timestamp: str | None = None
    hash: str = ""
    status: str = "pending"

    @property
    def best_bid(self) -> float | None:
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return self.asks[0].price if self.asks else None

    @property
    def midpoint(self) -> float | None:
        if not (self.bids and self.asks):
            return None
        return (self.bids[0].price + self.asks[0].price) / 2

    @property
    def spread(self) -> float | None:
        if not (self.bids and self.asks):
            return None
        return self.asks[0].price - self.bids[0].price


@dataclass(slots=True)
class MarketData:
    """The seed's per-token container, plus the book's `status`."""

    token_id: str
    order_book: OrderBook | None = None
    last_price: float | None = None
    last_trade_price: float | None = None
    last_trade_side: str | None = None
    last_trade_size: float | None = None
    last_update_time: float = 0.0
    tick_size: str = "0.01"
    status: str = "pending"
    market: str = ""

    @property
    def is_stale(self) -> bool:
        """No update for more than WS_STALE_DATA_THRESHOLD seconds (or none at all)."""
        if self.last_update_time == 0:
            return True
        return (time.time() - self.last_update_time) > stale_data_threshold()

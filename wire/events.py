"""The normalized events of the bus: frozen, slotted, numbers as canonical decimal strings.

A token's stream carries `Book`, `PriceChange`, `Trade`, `TickSizeChange`, `BestBidAsk` and
`Status`; the markets stream carries `MarketEvent`. `Entry` wraps an event with the envelope
every stream entry has (seq, epoch, rx) and, once read back, its stream id.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Literal


__all__ = [
    "BOOK_SOURCES",
    "BOOK_STATUSES",
    "STATUS_STATES",
    "BestBidAsk",
    "Book",
    "ConnectionState",
    "Entry",
    "Event",
    "Level",
    "MarketEvent",
    "PriceChange",
    "Side",
    "Status",
    "TickSizeChange",
    "Trade",
]

Level = tuple[str, str]
"""(price, size), canonical decimal strings."""

Side = Literal["bid", "ask"]


class ConnectionState(enum.Enum):
    """The seed's six connection states: a consumer's, and each feeder connection's in its
    health hash (`connections[].state`)."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    RECONNECTING = "reconnecting"
    FAILED = "failed"


STATUS_STATES = (
    "connected",
    "disconnected",
    "resubscribed",
    "resynced",
    "suspect",
    "retired",
    "failover",
)
BOOK_SOURCES = ("ws", "rest", "standby")
"""Where a snapshot came from: the socket, REST `/books`, or a new leader's warm book."""
BOOK_STATUSES = ("pending", "synced", "suspect", "retired")


@dataclass(frozen=True, slots=True)
class Book:
    """A full snapshot of one token's book; it replaces whatever was there."""

    type: ClassVar[str] = "book"
    asset_id: str
    market: str
    ts: str
    bids: tuple[Level, ...]
    """Best (highest) first."""
    asks: tuple[Level, ...]
    """Best (lowest) first."""
    hash: str
    source: str = "ws"
    tick_size: str = ""
    last_trade_price: str = ""


@dataclass(frozen=True, slots=True)
class PriceChange:
    """One level of one token changed to a new absolute size (`0` removes it)."""

    type: ClassVar[str] = "price_change"
    asset_id: str
    ts: str
    side: Side
    price: str
    size: str
    best_bid: str
    best_ask: str
    hash: str


@dataclass(frozen=True, slots=True)
class Trade:
    """A trade printed on a token; `side` is the taker's (BUY or SELL)."""

    type: ClassVar[str] = "trade"
    asset_id: str
    ts: str
    price: str
    size: str
    side: str
    fee_rate_bps: str
    tx: str


@dataclass(frozen=True, slots=True)
class TickSizeChange:
    """The token's minimum tick changed."""

    type: ClassVar[str] = "tick_size_change"
    asset_id: str
    ts: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class BestBidAsk:
    """The exchange's own top of book for a token (custom feature; a cross-check only)."""

    type: ClassVar[str] = "best_bid_ask"
    asset_id: str
    ts: str
    best_bid: str
    best_ask: str
    spread: str


@dataclass(frozen=True, slots=True)
class Status:
    """A feeder-made continuity marker: what happened to the token's upstream connection."""

    type: ClassVar[str] = "status"
    asset_id: str
    state: str
    reason: str = ""
    ts: str = ""
    ttl_ms: str = ""
    """`retired` only: the token's book and stream expire this many ms later (uncarried)."""


@dataclass(frozen=True, slots=True)
class MarketEvent:
    """A market lifecycle event for `P:markets`: `new_market` or `market_resolved`."""

    kind: Literal["new_market", "market_resolved"]
    market: str
    id: str
    asset_ids: tuple[str, ...]
    ts: str
    question: str = ""
    slug: str = ""
    outcomes: tuple[str, ...] = ()
    winning_asset_id: str = ""
    winning_outcome: str = ""
    tick_size: str = ""


Event = Book | PriceChange | Trade | TickSizeChange | BestBidAsk | Status


@dataclass(frozen=True, slots=True)
class Entry:
    """A token stream entry: an event plus its envelope, and its stream id once stored."""

    event: Event
    seq: int
    epoch: int
    rx: int
    """Feeder receive time, µs since the Unix epoch."""
    id: str = ""
    writer: str = ""
    """The feeder that wrote a `book` or `status` entry ("" for other types, or unknown)."""

"""The library strategies import: the seed's callback API, rebuilt on the Redis streams."""

from __future__ import annotations

from polybus.consumers.feed import MarketFeed, MarketWebSocket
from polybus.consumers.models import ConnectionState, MarketData, OrderBook, PriceLevel


__all__ = [
    "ConnectionState",
    "MarketData",
    "MarketFeed",
    "MarketWebSocket",
    "OrderBook",
    "PriceLevel",
]

"""The contract between feeder and consumers: keys, events, codec, order book. Pure."""

from __future__ import annotations

from wire.book import OrderBook
from wire.canon import canon
from wire.errors import BusError, DecodeError


__all__ = ["BusError", "DecodeError", "OrderBook", "canon"]

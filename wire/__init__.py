"""The contract between feeder and consumers: keys, events, codec, order book. Pure."""

from __future__ import annotations

from polybus.wire.book import OrderBook
from polybus.wire.canon import canon
from polybus.wire.errors import BusError, DecodeError


__all__ = ["BusError", "DecodeError", "OrderBook", "canon"]

"""The seed's twelve Phase 3 tests, ported: MarketFeed in place of MarketWebSocket, the
simulator's Gamma twin in place of fetch_active_markets, and real assertions where the seed
only printed."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.e2e.harness import Rig, rig
from tests.support import wait_for


@dataclass
class GammaMarket:
    question: str
    token_ids: list[str]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return orjson.loads(response.read())


async def fetch_active_markets(http_url: str, limit: int = 10) -> list[GammaMarket]:
    """The seed's Phase 2 discovery, against the simulator's Gamma `/markets` twin (in a
    thread: the simulator answers from this same event loop)."""
    raw = await asyncio.to_thread(_get, f"{http_url}/markets?closed=false&limit={limit}")
    return [GammaMarket(m["question"], orjson.loads(m["clobTokenIds"])) for m in raw]


@pytest.fixture
async def bus(redis_server) -> AsyncIterator[Rig]:
    """Simulator, feeder and Redis running: what the seed's tests got from Polymarket."""
    async with rig(redis_server, markets=4, rate=400.0) as r:
        yield r


async def token_of(r: Rig) -> str:
    markets = await fetch_active_markets(r.sim.http_url, limit=10)
    return next(m.token_ids[0] for m in markets if m.token_ids)


class TestWebSocketClient:
    """Test WebSocket client functionality."""

    def test_import_websocket_client(self) -> None:
        """The client and its state enum import under the seed's names."""
        from polybus.consumers import ConnectionState, MarketWebSocket

        assert MarketWebSocket is not None and ConnectionState is not None

    def test_client_instantiation(self) -> None:
        """A new client is disconnected with no subscriptions."""
        from polybus.consumers import ConnectionState, MarketWebSocket

        ws = MarketWebSocket()
        assert ws.state == ConnectionState.DISCONNECTED
        assert ws.is_connected is False
        assert len(ws.subscribed_tokens) == 0

    async def test_connect_disconnect(self, bus: Rig) -> None:
        """connect() succeeds into CONNECTED; disconnect() returns to DISCONNECTED."""
        from polybus.consumers import ConnectionState, MarketWebSocket

        ws = MarketWebSocket(bus.redis_server.url)
        assert await ws.connect() is True
        assert ws.state == ConnectionState.CONNECTED
        await ws.disconnect()
        assert ws.state == ConnectionState.DISCONNECTED

    async def test_subscribe_to_market(self, bus: Rig) -> None:
        """subscribe() succeeds into SUBSCRIBED and lists the token."""
        from polybus.consumers import ConnectionState, MarketWebSocket

        ws = MarketWebSocket(bus.redis_server.url)
        token_id = await token_of(bus)
        try:
            await ws.connect()
            assert await ws.subscribe([token_id]) is True
            assert ws.state == ConnectionState.SUBSCRIBED
            assert token_id in ws.subscribed_tokens
        finally:
            await ws.disconnect()

    async def test_receive_market_data(self, bus: Rig) -> None:
        """Real-time messages arrive for the subscribed token (the seed only printed a count)."""
        from polybus.consumers import MarketWebSocket

        ws = MarketWebSocket(bus.redis_server.url)
        token_id = await token_of(bus)
        received: list[dict[str, Any]] = []
        ws.on_price_change = ws.on_book_update = ws.on_trade = received.append
        try:
            await ws.connect()
            await ws.subscribe([token_id])
            await wait_for(lambda: len(received) >= 1, 10, "a market message")
            assert all(m["asset_id"] == token_id for m in received)
        finally:
            await ws.disconnect()

    async def test_order_book_maintenance(self, bus: Rig) -> None:
        """A local book is received and is best first on both sides, with mid and spread."""
        from polybus.consumers import MarketWebSocket

        ws = MarketWebSocket(bus.redis_server.url)
        token_id = await token_of(bus)
        try:
            await ws.connect()
            await ws.subscribe([token_id])

            def has_book() -> bool:
                book = ws.get_order_book(token_id)
                return book is not None and bool(book.bids or book.asks)

            await wait_for(has_book, 10, "an order book")
            book = ws.get_order_book(token_id)
            assert book is not None
            bids, asks = [lv.price for lv in book.bids], [lv.price for lv in book.asks]
            assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
            assert book.midpoint == pytest.approx((bids[0] + asks[0]) / 2)
            assert book.spread == pytest.approx(asks[0] - bids[0]) and book.spread > 0
        finally:
            await ws.disconnect()

    async def test_callbacks_are_called(self, bus: Rig) -> None:
        """connect, price_change, book_update, trade and disconnect callbacks all fire."""
        from polybus.consumers import MarketWebSocket

        ws = MarketWebSocket(bus.redis_server.url)
        tokens = bus.tokens
        fired = dict.fromkeys(
            ["connect", "disconnect", "price_change", "book_update", "trade"], False
        )
        ws.on_connect = lambda: fired.update(connect=True)
        ws.on_disconnect = lambda: fired.update(disconnect=True)
        ws.on_price_change = lambda d: fired.update(price_change=True)
        ws.on_book_update = lambda d: fired.update(book_update=True)
        ws.on_trade = lambda d: fired.update(trade=True)
        try:
            await ws.connect()
            assert fired["connect"], "on_connect should be called"
            await ws.subscribe(tokens)
            await wait_for(
                lambda: fired["price_change"] and fired["book_update"] and fired["trade"],
                15,
                f"every market callback: {fired}",
            )
        finally:
            await ws.disconnect()
            assert fired["disconnect"], "on_disconnect should be called"

    async def test_multiple_subscriptions(self, bus: Rig) -> None:
        """Several tokens subscribe at once and each gets its book."""
        from polybus.consumers import MarketWebSocket

        markets = await fetch_active_markets(bus.sim.http_url, limit=5)
        token_ids = [m.token_ids[0] for m in markets if m.token_ids][:3]
        assert len(token_ids) >= 2
        ws = MarketWebSocket(bus.redis_server.url)
        try:
            await ws.connect()
            assert await ws.subscribe(token_ids) is True
            assert len(ws.subscribed_tokens) == len(token_ids)
            await wait_for(
                lambda: all(ws.get_order_book(t).status == "synced" for t in token_ids),
                10,
                "every book synced",
            )
        finally:
            await ws.disconnect()


class TestConnectionState:
    """Test connection state management."""

    def test_state_enum_values(self) -> None:
        """The six states exist with their seed values."""
        from polybus.consumers import ConnectionState

        assert [s.value for s in ConnectionState] == [
            "disconnected",
            "connecting",
            "connected",
            "subscribed",
            "reconnecting",
            "failed",
        ]


class TestMarketData:
    """Test MarketData container."""

    def test_market_data_creation(self) -> None:
        """A fresh MarketData has no book or price and is stale."""
        from polybus.consumers import MarketData

        md = MarketData(token_id="test_token")
        assert md.token_id == "test_token"
        assert md.order_book is None and md.last_price is None
        assert md.is_stale is True

    def test_stale_data_detection(self) -> None:
        """is_stale follows the last update time against WS_STALE_DATA_THRESHOLD."""
        from polybus.consumers import MarketData

        md = MarketData(token_id="test")
        assert md.is_stale is True
        md.last_update_time = time.time()
        assert md.is_stale is False
        md.last_update_time = time.time() - 120
        assert md.is_stale is True


class TestIntegration:
    """Integration tests for Phase 3."""

    async def test_full_websocket_flow(self, bus: Rig) -> None:
        """Connect, subscribe, receive, read market data and book, disconnect."""
        from polybus.consumers import ConnectionState, MarketWebSocket

        market = next(m for m in await fetch_active_markets(bus.sim.http_url, 3) if m.token_ids)
        token_id = market.token_ids[0]
        ws = MarketWebSocket(bus.redis_server.url)
        count = 0

        def count_messages(_: dict[str, Any]) -> None:
            nonlocal count
            count += 1

        ws.on_price_change = ws.on_book_update = ws.on_trade = count_messages
        try:
            assert await ws.connect()
            assert ws.state == ConnectionState.CONNECTED
            assert await ws.subscribe([token_id])
            assert ws.state == ConnectionState.SUBSCRIBED
            await wait_for(lambda: count >= 3, 10, "messages")
            data = ws.get_market_data(token_id)
            assert data is not None and not data.is_stale and data.status == "synced"
            assert data.order_book is not None and data.order_book.bids and data.order_book.asks
        finally:
            await ws.disconnect()
            assert ws.state == ConnectionState.DISCONNECTED

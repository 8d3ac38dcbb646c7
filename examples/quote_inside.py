"""A small strategy on the callback API: quote one tick inside the spread, and never on a
book polybus cannot vouch for.

    REDIS_URL=redis://localhost:6379/0 python examples/quote_inside.py TOKEN [TOKEN…]

It prints the quotes it would place; wire your own order client in where it says so. The
feed's `on_disconnect` means "the books may be stale" (Redis lost, feeder gone, or the
exchange connection dropped): the strategy pulls every quote then, and quotes again after
`on_connect`, from books whose status is `synced`.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from typing import Any

from polybus import MarketFeed


class QuoteInside:
    """Bid one tick above the best bid and ask one tick below the best ask, when there is room."""

    def __init__(self, feed: MarketFeed) -> None:
        self.feed = feed
        self.live = False
        self.quotes: dict[str, tuple[Decimal, Decimal]] = {}
        self.placed = 0
        self.pulled = 0
        feed.on_connect, feed.on_disconnect = self.on_connect, self.on_disconnect
        feed.on_book_update = feed.on_price_change = self.on_change

    def on_connect(self) -> None:
        self.live = True
        for token in self.feed.subscribed_tokens:
            self.requote(token)

    def on_disconnect(self) -> None:
        self.live = False  # books may be stale: pull quotes until polybus vouches again
        if self.quotes:
            self.pulled += 1
            print(f"pulling {len(self.quotes)} quote(s): books not trusted", flush=True)
        self.quotes.clear()  # cancel your orders here

    def on_change(self, data: dict[str, Any]) -> None:
        self.requote(str(data["asset_id"]))

    def requote(self, token: str) -> None:
        data = self.feed.get_market_data(token)
        book = data.order_book if data else None
        if not (self.live and data and book and book.status == "synced"):
            return
        if not (book.bids and book.asks):
            return
        tick = Decimal(data.tick_size)
        bid, ask = Decimal(book.bids[0].price_str), Decimal(book.asks[0].price_str)
        if ask - bid <= 2 * tick:
            return
        quote = (bid + tick, ask - tick)
        if self.quotes.get(token) != quote:
            self.quotes[token] = quote
            self.placed += 1
            print(f"quote {token[:8]}… {quote[0]} / {quote[1]}", flush=True)  # place orders here

    async def run(self, tokens: list[str], stop: asyncio.Event) -> None:
        """Connect, subscribe, quote until `stop` is set, then disconnect."""
        if not await self.feed.connect():
            raise SystemExit("Redis unreachable: set REDIS_URL")
        await self.feed.subscribe(tokens)
        try:
            await stop.wait()
        finally:
            await self.feed.disconnect()


if __name__ == "__main__":
    asyncio.run(QuoteInside(MarketFeed()).run(sys.argv[1:], asyncio.Event()))

"""A small strategy on the callback API: quote one tick inside the spread, never on a
book polybus cannot vouch for.

    REDIS_URL=redis://localhost:6379/0 python examples/quote_inside.py TOKEN [TOKEN…]

It prints the quotes it would place; wire in your own order client where it says so.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

from consumers import MarketFeed


class QuoteInside:
    """Bid one tick above the best bid and ask one tick below the best ask, when room."""

    def __init__(self, feed: MarketFeed) -> None:
        self.feed = feed
        self.live = False
        self.quotes: dict[str, tuple[Decimal, Decimal]] = {}
        self.placed = 0

    def on_connect(self) -> None:
        self.live = True

    def on_disconnect(self) -> None:
        self.live = False  # books may be stale: pull quotes until polybus vouches again
        self.quotes.clear()
        print("pulling quotes: books not trusted", flush=True)

    def on_book_update(self, data: dict[str, object]) -> None:
        self.requote(str(data["asset_id"]))

    def on_price_change(self, data: dict[str, object]) -> None:
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


async def main(tokens: list[str], seconds: float = 0.0) -> QuoteInside:
    feed = MarketFeed()
    strategy = QuoteInside(feed)
    feed.on_connect, feed.on_disconnect = strategy.on_connect, strategy.on_disconnect
    feed.on_book_update, feed.on_price_change = strategy.on_book_update, strategy.on_price_change
    if not await feed.connect():
        raise SystemExit("Redis unreachable: set REDIS_URL")
    await feed.subscribe(tokens)
    try:
        await asyncio.sleep(seconds) if seconds else await asyncio.Event().wait()
    finally:
        await feed.disconnect()
    return strategy


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

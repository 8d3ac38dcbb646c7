"""Helpers for consumer tests: a MarketFeed bound to a rig, and the truth comparison."""

from __future__ import annotations

from polybus.consumers import MarketFeed


def feed_books_equal_truth(feed: MarketFeed, sim, tokens: list[str]) -> list[str]:
    """Tokens whose local book differs from the simulator's truth or is not synced."""
    bad = []
    for token in tokens:
        book = feed.get_order_book(token)
        bids, asks = sim.engine.true_book(token)
        if book is None or book.status != "synced":
            bad.append(f"{token[:8]}:{book.status if book else None}")
            continue
        got = (
            tuple((lv.price_str, lv.size_str) for lv in book.bids),
            tuple((lv.price_str, lv.size_str) for lv in book.asks),
        )
        if got != (tuple(bids), tuple(asks)):
            bad.append(f"{token[:8]}:levels")
    return bad

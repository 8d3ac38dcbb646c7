"""The order book: canonical prices, snapshot/delta, top of book, crossed detection."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, strategies as st

from polybus.wire.book import OrderBook
from polybus.wire.events import Book, PriceChange


def test_snapshot_sorts_best_first_and_drops_empty_levels() -> None:
    """Worst-first input comes out best first; size 0 levels vanish; spellings canonicalize."""
    book = OrderBook("1")
    book.replace(
        [("0.45", "1200"), ("0.46", "850"), (".470", "310.50"), ("0.44", "0")],
        [("0.52", "900"), ("0.51", "640"), ("0.49", "275.25")],
    )
    assert book.bids == [("0.47", "310.5"), ("0.46", "850"), ("0.45", "1200")]
    assert book.asks == [("0.49", "275.25"), ("0.51", "640"), ("0.52", "900")]
    assert (book.best_bid, book.best_ask) == ("0.47", "0.49")
    assert (book.midpoint, book.spread) == ("0.48", "0.02")
    assert not book.crossed


def test_deltas_set_absolute_sizes_and_zero_removes() -> None:
    """A delta's size is the new absolute size at the price; 0 removes the level."""
    book = OrderBook("1")
    book.replace([("0.47", "10")], [("0.49", "5")])
    book.apply(PriceChange("1", "2", "bid", "0.48", "150", "0.48", "0.49", "h"))
    book.apply(PriceChange("1", "3", "bid", "0.47", "0", "0.48", "0.49", "h"))
    book.apply(PriceChange("1", "4", "ask", "0.49", "7", "0.48", "0.49", "h"))
    assert book.bids == [("0.48", "150")]
    assert book.asks == [("0.49", "7")]
    assert book.hash == "h" and book.ts == "4"


def test_book_event_replaces_wholesale() -> None:
    """After a snapshot, no stale level survives."""
    book = OrderBook("1")
    book.replace([("0.1", "1"), ("0.2", "1")], [("0.9", "1")])
    book.apply(Book("1", "m", "9", (("0.3", "2"),), (), "h2", tick_size="0.01"))
    assert book.bids == [("0.3", "2")] and book.asks == []
    assert book.best_ask is None and book.midpoint is None and book.spread is None
    assert book.tick_size == "0.01"


def test_crossed_book_is_detected() -> None:
    """A bid at or above the best ask is a crossed book."""
    book = OrderBook("1")
    book.replace([("0.5", "1")], [("0.5", "1")])
    assert book.crossed


ops = st.lists(
    st.tuples(st.sampled_from(["bid", "ask"]), st.integers(1, 99), st.integers(0, 5)),
    max_size=200,
)


@given(ops)
def test_random_deltas_match_a_naive_model(deltas) -> None:
    """Applying random deltas gives the same book as a plain dict model, sorted best first."""
    book = OrderBook("1")
    model: dict[str, dict[Decimal, str]] = {"bid": {}, "ask": {}}
    for side, cents, size in deltas:
        price = f"0.{cents:02d}"
        book.set_level(side, price, str(size))
        if size:
            model[side][Decimal(price)] = str(size)
        else:
            model[side].pop(Decimal(price), None)
    bid_items = sorted(model["bid"].items(), reverse=True)
    want_bids = [(format(p.normalize(), "f"), s) for p, s in bid_items]
    want_asks = [(format(p.normalize(), "f"), s) for p, s in sorted(model["ask"].items())]
    assert book.bids == want_bids
    assert book.asks == want_asks
    assert book.best_bid == (want_bids[0][0] if want_bids else None)
    assert book.best_ask == (want_asks[0][0] if want_asks else None)
    assert len(book) == len(want_bids) + len(want_asks)

"""TokenBook (pure): seq checks, status rules, doubts, payload shapes; the audit's rules."""

from __future__ import annotations

import pytest

from polybus.consumers.books import TokenBook
from polybus.consumers.reader import audit_reason
from polybus.wire.errors import SequenceGap
from polybus.wire.events import Book, Entry, Event, PriceChange, Status, Trade


T = "42"


def entry(event: Event, seq: int) -> Entry:
    return Entry(event, seq=seq, epoch=1, rx=1, id=f"1-{seq}")


BOOK = Book(T, "0xm", "10", (("0.48", "100"),), (("0.52", "200"),), "h1", tick_size="0.01")
HASH = {
    "bid:0.48": "100",
    "ask:0.52": "200",
    "status": "synced",
    "last_id": "1-7",
    "seq": "7",
    "market": "0xm",
    "hash": "h",
    "ts": "9",
}


def names(calls: list[tuple[str, dict]]) -> list[str]:
    return [name for name, _ in calls]


def test_a_seq_that_is_not_the_next_one_raises_gap() -> None:
    """After seq 7, seq 9 (a hole) and seq 3 (a restart's numbering) are both gaps."""
    book = TokenBook(T)
    book.load(HASH)
    with pytest.raises(SequenceGap):
        book.apply(entry(BOOK, 9))
    with pytest.raises(SequenceGap):
        book.apply(entry(BOOK, 3))
    assert names(book.apply(entry(BOOK, 8))) == ["book_update"]


def test_a_stream_followed_from_nothing_must_start_at_seq_one() -> None:
    """With no hash when loaded, the first entry read must be seq 1, else entries were lost."""
    book = TokenBook(T)
    book.load({})
    with pytest.raises(SequenceGap):
        book.apply(entry(BOOK, 2))
    book.apply(entry(BOOK, 1))
    assert book.status == "synced" and book.cursor == "1-1"


def test_load_serves_levels_best_first_and_fires_book_update_when_synced() -> None:
    """A synced hash becomes a best-first book and one book_update call."""
    book = TokenBook(T)
    calls = book.load({**HASH, "bid:0.5": "1", "ask:0.6": "2"})
    assert names(calls) == ["status", "book_update"]
    ob = book.order_book()
    assert [lv.price_str for lv in ob.bids] == ["0.5", "0.48"]
    assert [lv.price_str for lv in ob.asks] == ["0.52", "0.6"]
    assert ob.best_bid == 0.5 and ob.spread == pytest.approx(0.02)
    assert book.cursor == "1-7" and book.seq == 7


def test_disconnected_makes_suspect_until_a_book_replaces_wholesale() -> None:
    """`disconnected` → suspect (with a status call); the next book → synced, no stale level."""
    book = TokenBook(T)
    book.load({**HASH, "bid:0.30": "9"})
    calls = book.apply(entry(Status(T, "disconnected", "closed"), 8))
    assert book.status == "suspect"
    assert calls == [
        (
            "status",
            {
                "event_type": "status",
                "asset_id": T,
                "status": "suspect",
                "previous": "synced",
                "state": "disconnected",
                "reason": "closed",
                "timestamp": "",
            },
        )
    ]
    calls = book.apply(entry(BOOK, 9))
    assert names(calls) == ["status", "book_update"] and book.status == "synced"
    assert book.book.bids == [("0.48", "100")], "a stale level survived the snapshot"


def test_a_new_upstream_connection_makes_a_synced_book_suspect() -> None:
    """`connected` on a synced book (a killed feeder's successor) means: wait for the book."""
    book = TokenBook(T)
    book.load(HASH)
    book.apply(entry(Status(T, "connected", "epoch 1"), 8))
    assert book.status == "suspect"
    fresh = TokenBook(T)
    fresh.load({})
    fresh.apply(entry(Status(T, "connected", "epoch 1"), 1))
    assert fresh.status == "pending", "a token that never had a book is pending, not suspect"


def test_a_feeder_doubt_is_cleared_by_data_and_a_reload_doubt_by_loading() -> None:
    """Feeder lost: suspect until data flows again; a gap: suspect until the hash is loaded."""
    book = TokenBook(T)
    book.load(HASH)
    book.suspect("feeder", "feeder_lost")
    assert book.status == "suspect"
    book.apply(entry(Status(T, "resynced"), 8))
    assert book.status == "suspect", "a status entry proves nothing about the book"
    book.apply(entry(Trade(T, "1", "0.5", "1", "BUY", "0", "tx"), 9))
    assert book.status == "synced"
    book.suspect("reload", "gap")
    book.apply(entry(Trade(T, "1", "0.5", "1", "BUY", "0", "tx"), 10))
    assert book.status == "suspect"
    book.load(HASH)
    assert book.status == "synced"


def test_a_lost_hash_after_a_book_reads_suspect_not_pending() -> None:
    """Redis lost the hash of a book we had: suspect (pending is for never-had-one)."""
    book = TokenBook(T)
    book.load(HASH)
    book.load({})
    assert book.status == "suspect" and not book.order_book().bids


def test_payloads_have_the_seed_keys_with_bus_strings() -> None:
    """price_change maps bid→BUY; trade is last_trade_price; values stay strings."""
    book = TokenBook(T)
    book.load(HASH)
    [(name, pc)] = book.apply(
        entry(PriceChange(T, "11", "bid", "0.49", "7", "0.49", "0.52", "h2"), 8)
    )
    assert name == "price_change"
    assert pc == {
        "event_type": "price_change",
        "asset_id": T,
        "market": "0xm",
        "price": "0.49",
        "size": "7",
        "side": "BUY",
        "best_bid": "0.49",
        "best_ask": "0.52",
        "timestamp": "11",
        "hash": "h2",
    }
    [(name, tr)] = book.apply(entry(Trade(T, "12", "0.5", "3", "SELL", "0", "tx"), 9))
    assert name == "trade" and tr["event_type"] == "last_trade_price" and tr["side"] == "SELL"
    data = book.market_data()
    assert data.last_trade_price == 0.5 and data.last_trade_side == "SELL"
    assert data.status == "synced" and not data.is_stale


@pytest.mark.parametrize(
    ("local", "hash_seq", "next_seq", "reload"),
    [
        (7, 7, None, False),  # quiet and complete
        (7, 9, 8, False),  # entries in flight: XREAD will bring them
        (7, 9, 9, True),  # trimmed past our cursor
        (7, 9, None, True),  # trimmed to nothing
        (7, 3, 1, True),  # Redis restarted: numbering began again
        (7, None, None, True),  # hash gone
        (None, None, None, False),  # nothing published yet
        (None, 5, 1, False),  # XREAD from 0-0 will read it all
        (None, 5, 3, True),  # followed from nothing, but the start is gone
        (None, 5, None, True),  # followed from nothing, the stream trimmed to nothing
    ],
)
def test_audit_rules(
    local: int | None, hash_seq: int | None, next_seq: int | None, reload: bool
) -> None:
    """The audit reloads exactly when XREAD alone could miss entries: the hash is ahead of
    us and the entry after our cursor is not the next one (or the hash is behind or gone)."""
    assert bool(audit_reason(local, hash_seq, next_seq)) is reload


def _state(book: TokenBook) -> tuple[object, ...]:
    levels = (book.book.bids, book.book.asks, book.book.hash, book.book.ts)
    return (book.status, book.wire_status, book.doubt, book.seq, book.cursor, book.rx, *levels)


@pytest.mark.parametrize(
    "setup",
    ["synced", "pending", "disconnected", "feeder_doubt", "reload_doubt", "retired"],
)
def test_apply_change_is_apply_of_a_price_change(setup: str) -> None:
    """The hot path (a decoded price_change tuple) leaves the book, its status and doubt
    exactly as `apply` of the same entry does, firing the same callbacks, in any state."""
    books = [TokenBook(T), TokenBook(T)]
    for book in books:
        book.load(HASH if setup != "pending" else {})
        if setup == "pending":
            book.seq = 7
        if setup in ("disconnected", "retired"):
            state = "retired" if setup == "retired" else "disconnected"
            book.apply(entry(Status(T, state, "x"), 8))
        if setup == "feeder_doubt":
            book.suspect("feeder", "feeder_lost")
        if setup == "reload_doubt":
            book.suspect("reload", "gap")
    slow, fast = books
    seq = slow.seq + 1 if slow.seq is not None else 1
    for i, (side, price, size) in enumerate([("bid", "0.47", "5"), ("ask", "0.52", "0")]):
        event = PriceChange(T, str(20 + i), side, price, size, "0.48", "0.53", f"h{i}")
        change = (seq + i, 1, 9 + i, event.ts, side, price, size, "0.48", "0.53", event.hash, "")
        assert fast.apply_change(change, f"2-{i}", 123.0) == slow.apply(
            Entry(event, seq + i, 1, 9 + i, f"2-{i}")
        )
        assert _state(fast) == _state(slow)
    with pytest.raises(SequenceGap):
        fast.apply_change((seq + 5, *change[1:]), "3-0", 0.0)

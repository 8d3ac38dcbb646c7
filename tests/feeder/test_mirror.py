"""The feeder's book mirror: tops from its own fold, the exchange's stated top checked per run."""

from __future__ import annotations

import random

from polybus.feeder.connection import backoff_delay
from polybus.feeder.mirror import Mirror
from polybus.wire.events import Book, PriceChange, Trade


T = "1"


def seeded() -> Mirror:
    mirror = Mirror(grace=0.3)
    mirror.apply([Book(T, "m", "1", (("0.47", "10"), ("0.46", "4")), (("0.49", "5"),), "h")])
    return mirror


def pc(ts: str, side: str, price: str, size: str, bid: str, ask: str) -> PriceChange:
    return PriceChange(T, ts, side, price, size, bid, ask, "h")  # type: ignore[arg-type]


def test_legacy_price_change_gets_tops_from_the_mirror() -> None:
    """A legacy delta without best_bid/best_ask is completed from the mirrored book."""
    events, bad = seeded().apply([pc("2", "bid", "0.48", "3", "", "")])
    assert events == [pc("2", "bid", "0.48", "3", "0.48", "0.49")]
    assert bad == []


def test_tops_on_the_bus_are_the_folded_book_and_empty_is_always_empty() -> None:
    """The exchange's "0"/"1" for an empty side become "", the same as after a book."""
    mirror = seeded()
    events, _ = mirror.apply([pc("2", "ask", "0.49", "0", "0.47", "1")])
    assert events == [pc("2", "ask", "0.49", "0", "0.47", "")]
    events, _ = mirror.apply(
        [pc("3", "bid", "0.47", "0", "0.46", "1"), pc("3", "bid", "0.46", "0", "0", "1")]
    )
    assert [(e.best_bid, e.best_ask) for e in events] == [("0.46", ""), ("", "")]


def test_a_disagreeing_top_is_reported_when_its_run_ends() -> None:
    """A wrong stated top is reported once an event with a newer timestamp completes the run."""
    mirror = seeded()
    _, bad = mirror.apply([pc("2", "ask", "0.50", "3", "0.47", "0.48")], now=1.0)
    assert bad == []  # the run of timestamp 2 may still be completed by its removals
    _, bad = mirror.apply([pc("3", "bid", "0.40", "3", "0.47", "0.49")], now=1.1)
    assert bad == [T]
    assert T not in mirror.synced
    assert mirror.mismatches == 1


def test_a_quiet_run_is_checked_after_the_grace() -> None:
    """With no later event, the last run is checked `grace` seconds after its last frame."""
    mirror = seeded()
    mirror.apply([pc("2", "ask", "0.50", "3", "0.47", "0.48")], now=1.0)
    assert mirror.due(1.2) == []
    assert mirror.due(1.31) == [T]
    assert mirror.due(5.0) == []  # checked once


def test_a_sweep_whose_stated_top_leads_its_removals_is_no_mismatch() -> None:
    """Frames of one timestamp that state the post-sweep top before removing levels agree."""
    mirror = seeded()
    # a taker sells through both bids: the first frame already states the post-sweep top
    run = [pc("5", "bid", "0.47", "0", "0", "0.49"), pc("5", "bid", "0.46", "0", "0", "0.49")]
    _, bad = mirror.apply(run[:1], now=1.0)
    assert bad == []
    _, bad = mirror.apply(run[1:], now=1.01)
    assert bad == [] and mirror.due(2.0) == []
    assert T in mirror.synced


def test_a_book_ends_a_run_without_a_check() -> None:
    """The post-trade book replaces everything, so a pending run is dropped unchecked."""
    mirror = seeded()
    mirror.apply([pc("2", "ask", "0.50", "3", "0.40", "0.41")], now=1.0)
    _, bad = mirror.apply([Book(T, "m", "2", (("0.40", "1"),), (("0.41", "1"),), "h")], now=1.1)
    assert bad == [] and mirror.due(9.0) == []


def test_unsynced_tokens_are_not_checked() -> None:
    """A token already distrusted is not reported again until its next snapshot."""
    mirror = seeded()
    mirror.unsync([T])
    mirror.apply([pc("2", "ask", "0.50", "3", "0.1", "0.2")], now=1.0)
    assert mirror.due(9.0) == []


def test_older_tells_whether_a_snapshot_predates_what_was_folded() -> None:
    """A REST book older than the newest folded event would roll the book back."""
    mirror = seeded()
    mirror.apply([pc("1700", "bid", "0.45", "1", "0.47", "0.49")])
    assert mirror.older(T, "1699") is True
    assert mirror.older(T, "1700") is False
    assert mirror.older(T, "1701") is False
    assert mirror.older("other", "1") is False
    mirror.apply([Trade(T, "1800", "0.5", "1", "BUY", "", "")])
    assert mirror.older(T, "1750") is False  # trades do not change the book


def test_an_event_the_book_cannot_fold_is_dropped_and_reported() -> None:
    """Mirror.apply never raises: an unfoldable event costs only its own token."""
    mirror = seeded()
    events, bad = mirror.apply(
        [
            pc("2", "bid", "not-a-price", "3", "", ""),
            PriceChange("2", "2", "bid", "0.4", "1", "0.4", "", "h"),
        ]
    )
    assert bad == [T]
    assert [e.asset_id for e in events] == ["2"]


def test_backoff_is_full_jitter_under_a_capped_exponential() -> None:
    """Delays lie in [0, min(base*2^(n-1), cap)] and use the whole range."""
    rng = random.Random(3)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (4, 8.0), (10, 30.0)]:
        delays = [backoff_delay(attempt, 1.0, 30.0, rng) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling
    assert 0 <= backoff_delay(5000, 1.0, 60.0, rng) <= 60.0  # a day-long outage: no overflow


def test_quarter_cent_ticks_keep_four_places_through_normalizer_and_mirror() -> None:
    """Ticks 0.0025 and 0.005 (not powers of ten) stay exact strings end to end: no level is
    rounded, merged or mistaken for another, and the tops are the folded book's."""
    from polybus.feeder.normalize import Normalizer

    norm, mirror = Normalizer([T]), Mirror()
    snapshot = (
        b'{"market":"0xm","asset_id":"1","timestamp":"1","hash":"h","bids":[{"price":"0.9925",'
        b'"size":"5"},{"price":"0.9950","size":"7"}],"asks":[{"price":"0.9975","size":"3"}],'
        b'"tick_size":"0.0025","event_type":"book","last_trade_price":""}'
    )
    events, _ = mirror.apply(norm.feed(snapshot, 1).events)
    assert events[0].tick_size == "0.0025"  # type: ignore[union-attr]
    change = (
        b'{"market":"0xm","price_changes":[{"asset_id":"1","price":"0.9975","size":"0",'
        b'"side":"SELL","hash":"h2","best_bid":"0.995","best_ask":"1"},{"asset_id":"1",'
        b'"price":"0.9950","size":"0","side":"BUY","hash":"h3","best_bid":"0.9925",'
        b'"best_ask":"1"}],"timestamp":"2","event_type":"price_change"}'
    )
    events, bad = mirror.apply(norm.feed(change, 2).events, now=1.0)
    assert [(e.price, e.best_bid, e.best_ask) for e in events] == [  # type: ignore[union-attr]
        ("0.9975", "0.995", ""),
        ("0.995", "0.9925", ""),
    ]
    assert bad == [] and mirror.due(5.0) == []
    assert mirror.book(T).bids == [("0.9925", "5")]

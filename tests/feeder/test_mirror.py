"""The feeder's book mirror: fills legacy tops, checks the exchange's best bid/ask."""

from __future__ import annotations

import random

from feeder.connection import backoff_delay
from feeder.mirror import Mirror
from wire.events import Book, PriceChange


T = "1"


def seeded() -> Mirror:
    mirror = Mirror()
    mirror.apply([Book(T, "m", "1", (("0.47", "10"),), (("0.49", "5"),), "h")])
    return mirror


def test_legacy_price_change_gets_tops_from_the_mirror() -> None:
    """A legacy delta without best_bid/best_ask is completed from the mirrored book."""
    events, bad = seeded().apply([PriceChange(T, "2", "bid", "0.48", "3", "", "", "h")])
    assert events == [PriceChange(T, "2", "bid", "0.48", "3", "0.48", "0.49", "h")]
    assert bad == []


def test_a_top_that_disagrees_with_the_exchange_is_reported() -> None:
    """When the exchange's best bid differs from ours, the token is reported and unsynced."""
    mirror = seeded()
    _, bad = mirror.apply([PriceChange(T, "2", "bid", "0.48", "3", "0.48", "0.49", "h")])
    assert bad == []
    _, bad = mirror.apply([PriceChange(T, "3", "ask", "0.50", "3", "0.48", "0.47", "h")])
    assert bad == [T]
    assert T not in mirror.synced
    assert mirror.mismatches == 1


def test_empty_side_may_be_reported_as_zero_or_one() -> None:
    """The docs show best_bid "0" / best_ask "1" for an empty side; that is not a mismatch."""
    mirror = seeded()
    _, bad = mirror.apply([PriceChange(T, "2", "ask", "0.49", "0", "0.47", "1", "h")])
    assert bad == []


def test_backoff_is_full_jitter_under_a_capped_exponential() -> None:
    """Delays lie in [0, min(base*2^(n-1), cap)] and use the whole range."""
    rng = random.Random(3)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (4, 8.0), (10, 30.0)]:
        delays = [backoff_delay(attempt, 1.0, 30.0, rng) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling

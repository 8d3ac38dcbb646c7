"""Gamma decoding: both clobTokenIds encodings, V2 positionIds, top-N selection."""

from __future__ import annotations

import orjson
import pytest

from feeder.discovery import parse_markets, select_top
from wire.errors import DecodeError


def market(i: int, volume: float, **extra) -> dict:
    return {"id": str(i), "conditionId": f"0x{i:064x}", "question": f"Q{i}?",
            "clobTokenIds": orjson.dumps([f"{i}1", f"{i}2"]).decode(),
            "outcomes": '["Yes","No"]', "active": True, "closed": False,
            "volume24hr": volume, **extra}


def test_string_and_array_encodings_and_v2_position_ids() -> None:
    """clobTokenIds as a JSON string or a real array, and positionIds for v2, all decode."""
    markets, problems = parse_markets([
        market(1, 5.0),
        market(2, 9.0, clobTokenIds=["21", "22"], outcomes=["Yes", "No"]),
        market(3, 1.0, version="v2", clobTokenIds=None, positionIds=["31", "32"]),
    ])
    assert problems == []
    assert [m.tokens for m in markets] == [("11", "12"), ("21", "22"), ("31", "32")]
    assert markets[0].outcomes == ("Yes", "No")


def test_top_n_by_volume_skips_closed_and_low_volume() -> None:
    """select_top keeps the most active tradable markets above the minimum volume."""
    markets, _ = parse_markets([market(1, 5.0), market(2, 9.0), market(3, 7.0, closed=True),
                                market(4, 0.5), market(5, 6.0, enableOrderBook=False)])
    assert [m.id for m in select_top(markets, 2)] == ["2", "1"]
    assert [m.id for m in select_top(markets, 10, min_volume=1.0)] == ["2", "1"]


def test_bad_markets_are_reported_not_fatal() -> None:
    """A market with broken ids is skipped with a reason; a non-array answer is an error."""
    markets, problems = parse_markets([market(1, 1.0, clobTokenIds="[oops"), market(2, 1.0),
                                       market(3, 1.0, clobTokenIds='["0xabc"]')])
    assert [m.id for m in markets] == ["2"]
    assert len(problems) == 2 and "clobTokenIds" in problems[0]
    with pytest.raises(DecodeError):
        parse_markets({"error": "x"})

"""Gamma: decoding, top-N selection, retry pacing, and fetching from a hostile server."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import orjson
import pytest

from polybus.feeder.discovery import parse_markets, parse_retry_after, retry_delay, select_top
from polybus.feeder.gamma import GammaError, fetch_markets
from polybus.wire.errors import DecodeError
from tests.feeder.hostile_gamma import BROKEN, HostileGamma


def market(i: int, volume: float, **extra) -> dict:
    return {
        "id": str(i),
        "conditionId": f"0x{i:064x}",
        "question": f"Q{i}?",
        "clobTokenIds": orjson.dumps([f"{i}1", f"{i}2"]).decode(),
        "outcomes": '["Yes","No"]',
        "active": True,
        "closed": False,
        "volume24hr": volume,
        **extra,
    }


def test_string_and_array_encodings_and_v2_position_ids() -> None:
    """clobTokenIds as a JSON string or a real array, and positionIds for v2, all decode."""
    markets, problems = parse_markets(
        [
            market(1, 5.0),
            market(2, 9.0, clobTokenIds=["21", "22"], outcomes=["Yes", "No"]),
            market(3, 1.0, version="v2", clobTokenIds=None, positionIds=["31", "32"]),
        ]
    )
    assert problems == []
    assert [m.tokens for m in markets] == [("11", "12"), ("21", "22"), ("31", "32")]
    assert markets[0].outcomes == ("Yes", "No")


def test_top_n_by_volume_skips_closed_and_low_volume() -> None:
    """select_top keeps the most active tradable markets above the minimum volume."""
    markets, _ = parse_markets(
        [
            market(1, 5.0),
            market(2, 9.0),
            market(3, 7.0, closed=True),
            market(4, 0.5),
            market(5, 6.0, enableOrderBook=False),
        ]
    )
    assert [m.id for m in select_top(markets, 2)] == ["2", "1"]
    assert [m.id for m in select_top(markets, 10, min_volume=1.0)] == ["2", "1"]


def test_bad_markets_are_reported_not_fatal() -> None:
    """A market with broken ids is skipped with a reason; a non-array answer is an error."""
    markets, problems = parse_markets(
        [
            market(1, 1.0, clobTokenIds="[oops"),
            market(2, 1.0),
            market(3, 1.0, clobTokenIds='["0xabc"]'),
        ]
    )
    assert [m.id for m in markets] == ["2"]
    assert len(problems) == 2 and "clobTokenIds" in problems[0]
    with pytest.raises(DecodeError):
        parse_markets({"error": "x"})


def test_hostile_numbers_in_a_market_do_not_escape() -> None:
    """NaN, infinite or absurd volumes rank as zero instead of raising or poisoning the sort."""
    markets, problems = parse_markets(
        [
            market(1, 1.0, volume24hr="nan"),
            market(2, 1.0, volume24hr="1e999"),
            market(3, 1.0, volume24hr=[1]),
            market(4, 2.0),
        ]
    )
    assert problems == [] and [m.volume24hr for m in markets] == [0.0, 0.0, 0.0, 2.0]
    assert [m.id for m in select_top(markets, 1)] == ["4"]


def test_retry_delay_grows_caps_and_honours_retry_after() -> None:
    """Backoff doubles from the base up to the poll interval, jittered to 50-100 %; a
    Retry-After wins when longer, itself capped; a years-long outage never overflows."""
    rng = random.Random(1)
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (10_000, 60.0)]:
        delay = retry_delay(attempt, 1.0, 60.0, rng)
        assert full * 0.5 <= delay <= full
    assert retry_delay(1, 1.0, 60.0, rng, retry_after=30.0) == 30.0
    assert retry_delay(1, 1.0, 60.0, rng, retry_after=1e12) == 600.0


def test_retry_after_seconds_dates_and_garbage() -> None:
    """Retry-After is read as seconds or an HTTP date; anything else is ignored."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    for junk in (None, "", "soon", "-5", "1e9", "\x00", "Mon, 99 Foo 2026 99:99:99 GMT"):
        assert parse_retry_after(junk) is None


@pytest.fixture
async def gamma() -> AsyncIterator[HostileGamma]:
    """A hostile Gamma whose good answer is two markets."""
    body = orjson.dumps([market(1, 5.0), market(2, 3.0)])
    server = HostileGamma(lambda: body)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.parametrize("mode", sorted(BROKEN))
async def test_every_broken_answer_is_a_gamma_or_decode_error(gamma, mode: str) -> None:
    """Truncated, garbled, reset, stalled, non-JSON, wrong-shaped or refused: fetch_markets
    raises GammaError or DecodeError (which the poll loop retries), never anything else."""
    gamma.script = [mode]
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if mode == "empty_list":  # well-formed but empty: usable, yet never "complete"
            assert await fetch_markets(session, gamma.url) == ([], False)
            return
        with pytest.raises((GammaError, DecodeError)) as caught:
            await fetch_markets(session, gamma.url)
    assert set(gamma.served) == {mode}  # (aiohttp retries a dropped request once itself)
    if mode == "http_429":
        assert isinstance(caught.value, GammaError) and caught.value.retry_after == 1.0


async def test_a_good_answer_after_broken_ones_is_read(gamma) -> None:
    """The same session reads a good listing after a truncated answer and a 500."""
    gamma.script = ["truncated", "http_500", "good"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        for _ in range(2):
            with pytest.raises(GammaError):
                await fetch_markets(session, gamma.url)
        markets, complete = await fetch_markets(session, gamma.url)
    assert [m.id for m in markets] == ["1", "2"] and complete

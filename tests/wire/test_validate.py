"""wire/validate.py: the one definition of a valid number and a valid event on the bus."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from polybus.wire import validate
from polybus.wire.errors import DecodeError
from polybus.wire.events import (
    BestBidAsk,
    Book,
    MarketEvent,
    PriceChange,
    Status,
    TickSizeChange,
    Trade,
)


T = "123456789"

# Spellings no rule takes: not numbers at all, or numbers in forms the bus refuses.
NOT_NUMBERS = [
    "",
    "abc",
    "1_000",
    "0.1_5",
    "١٢",
    "٠.٥",
    "０.５",
    " 0.5",
    "0.5 ",
    "\t1",
    "NaN",
    "inf",
    "0x10",
    "1,5",
    "1.2.3",
    ".",
    "e5",
    "²",
    "1e999999",
    "1e999999999",
    "1e100",
    "1" * 65,
]


@pytest.mark.parametrize(
    ("rule", "raw", "want"),
    [
        (validate.price, "0.48", "0.48"),
        (validate.price, ".480", "0.48"),
        (validate.price, "0.0001", "0.0001"),
        (validate.price, "0.9975", "0.9975"),
        (validate.price, "0.12345678", "0.12345678"),
        (validate.price, "1e-3", "0.001"),
        (validate.price, "0.50000000000000", "0.5"),
        (validate.tick, "0.0025", "0.0025"),
        (validate.tick, "0.005", "0.005"),
        (validate.tick, "0.01", "0.01"),
        (validate.tick, "0.0001", "0.0001"),
        (validate.top, "", ""),
        (validate.top, "0", "0"),
        (validate.top, "1", "1"),
        (validate.top, "1.00", "1"),
        (validate.top, "0.49", "0.49"),
        (validate.spread, "", ""),
        (validate.spread, "0.03", "0.03"),
        (validate.spread, "-0.01", "-0.01"),
        (validate.spread, "1", "1"),
        (validate.size, "0", "0"),
        (validate.size, "1200.0", "1200"),
        (validate.size, "999999999999.12345678", "999999999999.12345678"),
        (validate.size, "2.50E+2", "250"),
        (validate.fee_bps, "", ""),
        (validate.fee_bps, "0", "0"),
        (validate.fee_bps, "10000", "10000"),
        (validate.fee_bps, "12.5", "12.5"),
        (validate.timestamp, "", ""),
        (validate.timestamp, "1791201600123", "1791201600123"),
    ],
)
def test_rules_accept_and_canonicalise(rule: Callable[[str], str], raw: str, want: str) -> None:
    """Each field rule takes its valid values, in any spelling, and returns the canonical text."""
    assert rule(raw) == want
    assert rule(raw) == want  # and again, from the rule's cache


@pytest.mark.parametrize(
    ("rule", "raw"),
    [
        (validate.price, "0"),
        (validate.price, "1"),
        (validate.price, "7"),
        (validate.price, "-0.5"),
        (validate.price, "+0.5"),
        (validate.price, "0.123456789"),
        (validate.price, "0." + "1" * 40),
        (validate.price, "0.30000000000000004"),
        (validate.price, "1e-9"),
        (validate.price, ""),
        (validate.tick, "0"),
        (validate.tick, "1"),
        (validate.tick, "0.1" + "0" * 8 + "1"),
        (validate.top, "1.01"),
        (validate.top, "-0"),
        (validate.top, "2"),
        (validate.top, "+1"),
        (validate.spread, "1.5"),
        (validate.spread, "-2"),
        (validate.spread, "+0.01"),
        (validate.size, "-5"),
        (validate.size, "-0"),
        (validate.size, "+5"),
        (validate.size, "1" * 13),
        (validate.size, "1.123456789"),
        (validate.size, ""),
        (validate.fee_bps, "10000.5"),
        (validate.fee_bps, "10001"),
        (validate.fee_bps, "-1"),
        (validate.timestamp, "17:00"),
        (validate.timestamp, "١٧"),
        (validate.timestamp, "1" * 21),
        (validate.timestamp, " 1"),
    ],
)
def test_rules_refuse_what_their_field_may_not_hold(rule: Callable[[str], str], raw: str) -> None:
    """Out of range, too many digits, or a sign where none is allowed raises DecodeError."""
    with pytest.raises(DecodeError):
        rule(raw)


@pytest.mark.parametrize("raw", NOT_NUMBERS)
def test_no_number_rule_takes_a_non_ascii_or_unbounded_spelling(raw: str) -> None:
    """Underscores, non-ASCII digits, padding, NaN/inf and exponent blow-ups fail every rule."""
    for rule in (
        validate.price,
        validate.tick,
        validate.size,
        validate.spread,
        validate.top,
        validate.fee_bps,
    ):
        if raw == "" and rule in (validate.spread, validate.top, validate.fee_bps):
            continue  # "" means "not sent" for the optional fields
        with pytest.raises(DecodeError):
            rule(raw)


def test_rule_caches_stay_bounded_and_short() -> None:
    """A flood of distinct valid sizes never grows a rule's cache past its bound."""
    for i in range(70_000):
        validate.size(f"{i}.5")
    assert len(validate._SIZES) <= validate._CACHE_MAX
    assert max(len(k) for k in validate._SIZES) <= 64


def test_text_is_bounded() -> None:
    """Free text passes up to its limit and fails past it."""
    assert validate.text("x" * validate.ID_MAX) == "x" * validate.ID_MAX
    with pytest.raises(DecodeError):
        validate.text("x" * (validate.ID_MAX + 1))
    assert validate.text("q" * 500, validate.LABEL_MAX) == "q" * 500


VALID_EVENTS = [
    Book(
        T,
        "0xm",
        "1",
        (("0.47", "310.5"), ("0.46", "850")),
        (("0.49", "1"), ("0.5", "2")),
        "h",
        "ws",
        "0.01",
        "0.48",
    ),
    Book(T, "", "", (), (), "", "rest"),
    PriceChange(T, "7", "bid", "0.48", "0", "0", "1", "h"),
    Trade(T, "2", "0.51", "100", "BUY", "0", "0xab"),
    Trade(T, "2", "0.51", "100", "", "", ""),
    TickSizeChange(T, "3", "0.01", "0.0025"),
    TickSizeChange(T, "3", "", "0.005"),
    BestBidAsk(T, "4", "0.48", "0.51", "0.03"),
    BestBidAsk(T, "4", "", "", "-0.01"),
    Status(T, "disconnected", "closed:1006"),
]


@pytest.mark.parametrize("event", VALID_EVENTS)
def test_check_event_passes_valid_events(event: object) -> None:
    """Every event type with valid fields (the exchange's 0/1 empty tops included) passes."""
    validate.check_event(event)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        PriceChange(T, "7", "bid", "7", "-5", "0.48", "0.49", "h"),
        PriceChange(T, "7", "bid", "0.480", "5", "0.48", "0.49", "h"),  # not canonical
        PriceChange(T, "7", "BUY", "0.48", "5", "0.48", "0.49", "h"),  # type: ignore[arg-type]
        PriceChange("0xabc", "7", "bid", "0.48", "5", "", "", "h"),
        PriceChange(T, "1e3", "bid", "0.48", "5", "", "", "h"),
        Book(T, "m", "1", (("0.46", "1"), ("0.47", "1")), (), "h"),  # bids not best first
        Book(T, "m", "1", (("0.47", "0"),), (), "h"),  # a size-0 level
        Book(T, "m", "1", (), (("0.5", "1"), ("0.5", "2")), "h"),  # a price twice
        Book(T, "m", "1", (), (), "h", "carrier-pigeon"),
        Book(T, "m", "1", (), (), "h" * 300),
        Book(T, "m", "1", (), (), "h", "ws", "1"),
        Trade(T, "2", "0.51", "100", "HOLD", "0", ""),
        Trade(T, "2", "0.51", "100", "BUY", "20000", ""),
        TickSizeChange(T, "3", "0.01", "0"),
        BestBidAsk(T, "4", "1.5", "0.51", "0.03"),
        Status(T, "weird"),
    ],
)
def test_check_event_refuses_invalid_events(event: object) -> None:
    """A bad number, side, token, order, source, state or an oversized text fails the check."""
    with pytest.raises(DecodeError):
        validate.check_event(event)  # type: ignore[arg-type]


def test_check_market() -> None:
    """Lifecycle events need their market, valid token ids and a valid tick."""
    good = MarketEvent(
        "new_market", "0xc", "1", ("1", "2"), "5", "Q?", "q", ("Yes", "No"), tick_size="0.01"
    )
    validate.check_market(good)
    for bad in (
        MarketEvent("new_market", "", "1", ("1",), "5"),
        MarketEvent("new_market", "0xc", "1", ("0x1",), "5"),
        MarketEvent("market_resolved", "0xc", "1", (), "5", winning_asset_id="Yes"),
        MarketEvent("new_market", "0xc", "1", (), "5", tick_size="2"),
    ):
        with pytest.raises(DecodeError):
            validate.check_market(bad)

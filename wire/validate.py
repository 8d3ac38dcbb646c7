"""What a valid number, and a valid event, is on the bus: the one definition. Pure.

The feeder's normalizer quarantines an element that breaks a rule here; the consumers' decode
(`wire/codec.py`) refuses a stream entry that does. Each field rule takes the text as received,
returns its canonical form (`wire/canon.py`) and raises DecodeError otherwise:

| rule | accepts |
|---|---|
| `price` | 0 < p < 1, at most `PRICE_PLACES` (8) decimal places |
| `tick` | like a price: 0 < tick < 1 (`0.01`, `0.001`, `0.0001`, `0.005`, `0.0025`) |
| `top` | best bid/ask and last trade price: `""`, `0` (no bids), `1` (no asks) or a price |
| `spread` | `""`, or −1 ≤ s ≤ 1 with a price's places (the one signed field: a crossed book) |
| `size` | 0 ≤ s < 10^`SIZE_INT_DIGITS` (12), at most `SIZE_PLACES` (8) decimal places |
| `fee_bps` | `""`, or 0 ≤ fee ≤ 10000 (100 %), at most `SIZE_PLACES` decimal places |
| `timestamp` | `""`, or 1 to `TS_DIGITS` (20) ASCII digits |

Why N = 8 for prices: the finest live ticks, 0.0001 and 0.0025, need 4 decimal places; 8
leaves room for a tick 10,000 times finer and still stops the `0.3000000000000000444`-style
float leftovers and 40-digit prices a broken upstream sends. As 0 < p < 1, 8 places also bound a
price to 8 significant digits and 10 characters. Sizes: an outcome token has 6 decimals
on-chain (8 leave slack) and 10^12 shares is beyond all the USDC there is.

Only a spread may carry a sign, and only `-`: a sign anywhere else is refused even when the
value (`-0`, `+0.5`) would pass. Everything ASCII: canon refuses `1_000`, `١٢`, ` 5 `, `NaN`,
and bounds exponents before expanding them. Each rule keeps a bounded cache of the short texts
it accepted, so a repeated price costs one dict lookup.

`check_event` states the whole of a valid event (canonical numbers by these rules, a valid
token, bounded text, a known side or state, book levels best first with non-zero sizes); the
normalizer's output always passes it, and tests and bench/fuzz_normalizer.py hold it to that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from polybus.wire.canon import canonical
from polybus.wire.errors import DecodeError
from polybus.wire.events import (
    BOOK_SOURCES,
    STATUS_STATES,
    BestBidAsk,
    Book,
    Event,
    Level,
    MarketEvent,
    PriceChange,
    Status,
    TickSizeChange,
    Trade,
)
from polybus.wire.keys import validate_token


__all__ = [
    "ID_MAX",
    "LABEL_MAX",
    "PRICE_PLACES",
    "SIZE_INT_DIGITS",
    "SIZE_PLACES",
    "TS_DIGITS",
    "check_event",
    "check_market",
    "fee_bps",
    "price",
    "size",
    "spread",
    "text",
    "tick",
    "timestamp",
    "top",
]

PRICE_PLACES = 8
SIZE_INT_DIGITS = 12
SIZE_PLACES = 8
TS_DIGITS = 20
ID_MAX = 256
"""Longest id-like text (condition ids and tx hashes are 66 characters, book hashes 40)."""
LABEL_MAX = 1024
"""Longest human text (a market's question, slug, outcome names)."""

_PRICE_MAX_LEN = 2 + PRICE_PLACES
_CACHE_MAX = 65536


# --- predicates on canonical text (cheap string tests: canonical means no trailing zeros) -----


def _is_price(c: str) -> bool:
    return c.startswith("0.") and len(c) <= _PRICE_MAX_LEN


def _is_top(c: str) -> bool:
    return c == "0" or c == "1" or _is_price(c)


def _is_spread(c: str) -> bool:
    return _is_top(c[1:] if c.startswith("-") else c)


def _is_size(c: str) -> bool:
    dot = c.find(".")
    if dot < 0:
        return len(c) <= SIZE_INT_DIGITS and c[0] != "-"
    return dot <= SIZE_INT_DIGITS and len(c) - dot - 1 <= SIZE_PLACES and c[0] != "-"


def _is_fee(c: str) -> bool:
    return _is_size(c) and (len(c.partition(".")[0]) < 5 or c == "10000")


Check = Callable[[str], bool]


def _admit(text: str, cache: dict[str, str], ok: Check, signed: bool, what: str) -> str:
    """Canonical `text` if it passes `ok` (no `+`; a `-` only if `signed`), now cached.
    (Each rule looks its cache up itself first: a hit costs one call and one dict lookup.)"""
    out = canonical(text)  # DecodeError for what is not a number at all
    if not ok(out) or text[0] == "+" or (not signed and text[0] == "-"):
        raise DecodeError(f"not a valid {what}: {text[:40]!r}")
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[text] = out
    return out


_PRICES: dict[str, str] = {}
_TOPS: dict[str, str] = {}
_SPREADS: dict[str, str] = {}
_SIZES: dict[str, str] = {}
_FEES: dict[str, str] = {}


def price(text: str) -> str:
    """A price: 0 < p < 1, at most PRICE_PLACES decimal places."""
    hit = _PRICES.get(text)
    if hit is not None:
        return hit
    return _admit(text, _PRICES, _is_price, False, "price")


def tick(text: str) -> str:
    """A tick size: 0 < tick < 1 with a price's places (0.0025 and 0.005 are live)."""
    hit = _PRICES.get(text)
    if hit is not None:
        return hit
    return _admit(text, _PRICES, _is_price, False, "tick size")


def top(text: str) -> str:
    """A best bid/ask or last trade price: "", 0 (no bids), 1 (no asks) or a price."""
    hit = _TOPS.get(text)
    if hit is not None:
        return hit
    return text if text == "" else _admit(text, _TOPS, _is_top, False, "best bid/ask")


def spread(text: str) -> str:
    """A spread: "", or -1 ≤ s ≤ 1 (signed: a crossed book has a negative one)."""
    hit = _SPREADS.get(text)
    if hit is not None:
        return hit
    return text if text == "" else _admit(text, _SPREADS, _is_spread, True, "spread")


def size(text: str) -> str:
    """A size: 0 ≤ s < 10^SIZE_INT_DIGITS with at most SIZE_PLACES decimal places."""
    hit = _SIZES.get(text)
    if hit is not None:
        return hit
    return _admit(text, _SIZES, _is_size, False, "size")


def fee_bps(text: str) -> str:
    """A fee rate in basis points: "", or 0 ≤ fee ≤ 10000."""
    hit = _FEES.get(text)
    if hit is not None:
        return hit
    return text if text == "" else _admit(text, _FEES, _is_fee, False, "fee rate")


def timestamp(text: str) -> str:
    """An exchange timestamp: "", or 1 to TS_DIGITS ASCII digits (Unix ms)."""
    if text and not (len(text) <= TS_DIGITS and text.isascii() and text.isdigit()):
        raise DecodeError(f"not a timestamp: {text[:40]!r}")
    return text


def text(value: str, limit: int = ID_MAX) -> str:
    """A free-text field (hash, market, tx, …) of at most `limit` characters."""
    if len(value) > limit:
        raise DecodeError(f"text field longer than {limit} characters")
    return value


# --- whole events ---------------------------------------------------------------------------


def _same(rule: Callable[[str], str], value: str, name: str) -> None:
    """`value` passes `rule` and is already canonical (what may be published)."""
    if rule(value) != value:
        raise DecodeError(f"{name} is not canonical: {value[:40]!r}")


def _levels(levels: tuple[Level, ...], descending: bool, name: str) -> None:
    """Valid prices and non-zero sizes, strictly best first. Canonical prices in (0, 1) sort
    as text the way they sort as numbers ("0.4" < "0.45" < "0.5")."""
    last = ""
    for p, s in levels:
        _same(price, p, name)
        _same(size, s, name)
        if s == "0":
            raise DecodeError(f"{name}: a level of size 0")
        if last and not (p < last if descending else p > last):
            raise DecodeError(f"{name}: levels out of order at {p}")
        last = p


def _book(e: Book) -> None:
    _levels(e.bids, True, "bids")
    _levels(e.asks, False, "asks")
    text(e.market)
    text(e.hash)
    if e.source not in BOOK_SOURCES:
        raise DecodeError(f"book source must be one of {BOOK_SOURCES}, got {e.source[:20]!r}")
    if e.tick_size:
        _same(tick, e.tick_size, "tick_size")
    _same(top, e.last_trade_price, "last_trade_price")


def _price_change(e: PriceChange) -> None:
    if e.side not in ("bid", "ask"):
        raise DecodeError(f"price_change side must be bid or ask, got {e.side[:20]!r}")
    _same(price, e.price, "price")
    _same(size, e.size, "size")
    _same(top, e.best_bid, "best_bid")
    _same(top, e.best_ask, "best_ask")
    text(e.hash)


def _trade(e: Trade) -> None:
    if e.side not in ("", "BUY", "SELL"):
        raise DecodeError(f"trade side must be BUY or SELL, got {e.side[:20]!r}")
    _same(price, e.price, "price")
    _same(size, e.size, "size")
    _same(fee_bps, e.fee_rate_bps, "fee_rate_bps")
    text(e.tx)


def _tick_change(e: TickSizeChange) -> None:
    if e.old:
        _same(tick, e.old, "old")
    _same(tick, e.new, "new")


def _best_bid_ask(e: BestBidAsk) -> None:
    _same(top, e.best_bid, "best_bid")
    _same(top, e.best_ask, "best_ask")
    _same(spread, e.spread, "spread")


def _status(e: Status) -> None:
    if e.state not in STATUS_STATES:
        raise DecodeError(f"unknown status state {e.state[:20]!r}")
    text(e.reason)


_CHECKS: dict[type, Callable[[Any], None]] = {
    Book: _book,
    PriceChange: _price_change,
    Trade: _trade,
    TickSizeChange: _tick_change,
    BestBidAsk: _best_bid_ask,
    Status: _status,
}


def check_event(event: Event) -> None:
    """Raise DecodeError unless `event` is fit for the bus (see the module docstring)."""
    check = _CHECKS.get(type(event))
    if check is None:
        raise DecodeError(f"not a token event: {type(event).__name__}")
    validate_token(event.asset_id)
    timestamp(event.ts)
    check(event)


def check_market(event: MarketEvent) -> None:
    """Raise DecodeError unless a lifecycle event is fit for the markets stream."""
    if event.kind not in ("new_market", "market_resolved"):
        raise DecodeError(f"unknown lifecycle kind {event.kind[:20]!r}")
    for token in event.asset_ids:
        validate_token(token)
    if event.winning_asset_id:
        validate_token(event.winning_asset_id)
    if not event.market:
        raise DecodeError("a lifecycle event needs its market")
    timestamp(event.ts)
    for value in (event.market, event.id):
        text(value)
    for value in (event.question, event.slug, event.winning_outcome, *event.outcomes):
        text(value, LABEL_MAX)
    if event.tick_size:
        _same(tick, event.tick_size, "tick_size")

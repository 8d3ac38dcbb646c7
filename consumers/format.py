"""How books and events look to a person: shared by `tail`, `book` and `top`."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from polybus.wire.events import BestBidAsk, Book, Entry, PriceChange, Status, TickSizeChange, Trade


__all__ = ["age", "clock", "entry_line", "short"]


def short(token: str) -> str:
    """A token id shortened for a terminal: first 6 and last 4 digits."""
    return token if len(token) <= 12 else f"{token[:6]}…{token[-4:]}"


def clock(ms: str | int | float) -> str:
    """HH:MM:SS.mmm (UTC) of a ms timestamp; '-' when unknown."""
    try:
        value = float(ms)
    except (TypeError, ValueError):
        return "-"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


def age(ms: str | int | float) -> str:
    """How long ago a ms timestamp was, compactly ('3.2s', '4m', '-')."""
    try:
        seconds = time.time() - float(ms) / 1000
    except (TypeError, ValueError):
        return "-"
    if seconds < 60:
        return f"{max(seconds, 0):.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _detail(entry: Entry) -> str:
    e = entry.event
    if isinstance(e, PriceChange):
        return f"{e.side} {e.price} x {e.size}  best {e.best_bid or '-'}/{e.best_ask or '-'}"
    if isinstance(e, Book):
        bid = e.bids[0][0] if e.bids else "-"
        ask = e.asks[0][0] if e.asks else "-"
        return f"{len(e.bids)} bids {len(e.asks)} asks  best {bid}/{ask}  ({e.source})"
    if isinstance(e, Trade):
        return f"{e.side} {e.size} @ {e.price}"
    if isinstance(e, TickSizeChange):
        return f"{e.old} -> {e.new}"
    if isinstance(e, BestBidAsk):
        return f"{e.best_bid}/{e.best_ask} spread {e.spread}"
    assert isinstance(e, Status)
    return f"{e.state} ({e.reason})" if e.reason else e.state


def entry_line(token: str, entry: Entry) -> str:
    """One line per event: `12:00:00.123 704315…2544 seq=57 price_change bid 0.48 x 150 …`."""
    when = clock(entry.event.ts) if entry.event.ts else clock(entry.rx / 1000)
    return f"{when} {short(token)} seq={entry.seq} {entry.event.type} {_detail(entry)}"

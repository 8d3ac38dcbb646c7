"""`polybus top`: a live table of every book in Redis, most active first (rich)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal

import redis.asyncio as aioredis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from polybus.consumers.format import age, short
from polybus.wire import keys
from polybus.wire.hashes import SUMMARY_FIELDS, BookHash, read_book


__all__ = ["Row", "rates", "snapshot", "table", "top"]

STATUS_STYLE = {"synced": "green", "pending": "yellow", "suspect": "bold red"}

Row = BookHash
"""One book as `top` shows it: its SUMMARY_FIELDS, read leniently (no levels)."""


async def snapshot(redis: aioredis.Redis, prefix: str) -> dict[str, Row]:
    """token -> the fields `top` shows, for every book hash under the prefix."""
    found = [str(k) async for k in redis.scan_iter(keys.book_pattern(prefix), count=1000)]
    pipe = redis.pipeline(transaction=False)
    for key in found:
        pipe.hmget(key, list(SUMMARY_FIELDS))
    rows = await pipe.execute()
    return {
        keys.token_of(k): read_book(dict(zip(SUMMARY_FIELDS, vals, strict=True)))
        for k, vals in zip(found, rows, strict=True)
    }


def rates(previous: dict[str, Row], current: dict[str, Row], seconds: float) -> dict[str, float]:
    """Entries per second of each book between two snapshots `seconds` apart."""
    return {
        t: ((r.seq or 0) - ((previous[t].seq or 0) if t in previous else 0)) / max(seconds, 1e-9)
        for t, r in current.items()
    }


def table(rows: dict[str, Row], rates: dict[str, float], limit: int) -> Table:
    """The table: one row per book, sorted by events/s then seq."""
    t = Table(title=f"polybus top — {len(rows)} books", expand=True)
    for name, justify in [
        ("market", "left"),
        ("outcome", "left"),
        ("bid", "right"),
        ("ask", "right"),
        ("mid", "right"),
        ("spread", "right"),
        ("last", "right"),
        ("age", "right"),
        ("status", "left"),
        ("ev/s", "right"),
    ]:
        t.add_column(name, justify=justify, no_wrap=name != "market")  # type: ignore[arg-type]
    order = sorted(rows, key=lambda tk: (-rates.get(tk, 0.0), -(rows[tk].seq or 0)))
    for token in order[:limit]:
        r = rows[token]
        mid = spread = ""
        if r.best_bid and r.best_ask:  # read_book keeps only numbers here
            bid, ask = Decimal(r.best_bid), Decimal(r.best_ask)
            mid, spread = format((bid + ask) / 2, "f"), format(ask - bid, "f")
        status = r.status or "?"
        t.add_row(
            r.question or short(token),
            r.outcome,
            r.best_bid or "-",
            r.best_ask or "-",
            mid or "-",
            spread or "-",
            r.last_trade_price or "-",
            age(r.ts),
            f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]",
            f"{rates.get(token, 0.0):.1f}",
        )
    return t


async def top(
    redis: aioredis.Redis, prefix: str, *, rows: int = 30, once: bool = False,
    interval: float = 1.0, stop: asyncio.Event | None = None,
) -> int:
    """Refresh the table in place until `stop` is set (or print it once)."""
    console = Console()
    stop = asyncio.Event() if stop is None else stop
    try:
        previous, then = await snapshot(redis, prefix), time.monotonic()
        if once:
            console.print(table(previous, {}, rows))
            return 0
        with Live(table(previous, {}, rows), console=console, refresh_per_second=4) as live:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                current, now = await snapshot(redis, prefix), time.monotonic()
                live.update(table(current, rates(previous, current, now - then), rows))
                previous, then = current, now
        return 0
    finally:
        await redis.aclose()

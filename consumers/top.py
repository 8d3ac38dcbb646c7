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


__all__ = ["Row", "snapshot", "table", "top"]

FIELDS = ["question", "outcome", "best_bid", "best_ask", "last_trade_price", "ts", "status", "seq"]
STATUS_STYLE = {"synced": "green", "pending": "yellow", "suspect": "bold red"}

Row = dict[str, str]


async def snapshot(redis: aioredis.Redis, prefix: str) -> dict[str, Row]:
    """token -> the fields `top` shows, for every book hash under the prefix."""
    found = [str(k) async for k in redis.scan_iter(keys.book_pattern(prefix), count=1000)]
    pipe = redis.pipeline(transaction=False)
    for key in found:
        pipe.hmget(key, FIELDS)
    rows = await pipe.execute()
    return {
        keys.token_of(k): dict(zip(FIELDS, (v or "" for v in vals), strict=True))
        for k, vals in zip(found, rows, strict=True)
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
    order = sorted(rows, key=lambda tk: (-rates.get(tk, 0.0), -int(rows[tk]["seq"] or 0)))
    for token in order[:limit]:
        r = rows[token]
        mid = spread = ""
        if r["best_bid"] and r["best_ask"]:
            bid, ask = Decimal(r["best_bid"]), Decimal(r["best_ask"])
            mid, spread = format((bid + ask) / 2, "f"), format(ask - bid, "f")
        status = r["status"] or "?"
        t.add_row(
            r["question"] or short(token),
            r["outcome"],
            r["best_bid"] or "-",
            r["best_ask"] or "-",
            mid or "-",
            spread or "-",
            r["last_trade_price"] or "-",
            age(r["ts"]),
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
                rates = {
                    t: (int(r["seq"] or 0) - int(previous.get(t, {}).get("seq") or 0))
                    / max(now - then, 1e-9)
                    for t, r in current.items()
                }
                live.update(table(current, rates, rows))
                previous, then = current, now
        return 0
    finally:
        await redis.aclose()

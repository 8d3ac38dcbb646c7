"""`polybus top`: a live table of every book in Redis, most active first (rich).

The `writer` column is the one rule of wire/maintained.py: `ok` (its writer holds the lease
of the token's partition, or — older feeders — its health key exists), `handover` (another
feeder holds the lease and has not written it yet), `NONE` (nobody may write it: a `synced`
there is only what a dead feeder left behind), `?` (no writer recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal

from rich.console import Console
from rich.live import Live
from rich.table import Table

from polybus.consumers.format import age, short
from polybus.consumers.writers import verdicts
from polybus.redisio import Client
from polybus.wire import keys
from polybus.wire.hashes import SUMMARY_FIELDS, BookHash, read_book
from polybus.wire.maintained import HANDOVER, MAINTAINED, UNMAINTAINED, Verdict


__all__ = ["Row", "maintainers", "rates", "snapshot", "table", "top"]

STATUS_STYLE = {"synced": "green", "pending": "yellow", "suspect": "bold red"}
WRITER_CELL = {
    MAINTAINED: "[green]ok[/]",
    HANDOVER: "[yellow]handover[/]",
    UNMAINTAINED: "[bold red]NONE[/]",
}

Row = BookHash
"""One book as `top` shows it: its SUMMARY_FIELDS, read leniently (no levels)."""


async def snapshot(redis: Client, prefix: str) -> dict[str, Row]:
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


_MIN_WIDTH = {"status": len("suspect"), "writer": len("handover")}
"""Never cut these to `sync…` on a narrow terminal: the market column wraps instead."""


async def maintainers(redis: Client, prefix: str, rows: dict[str, Row]) -> dict[str, Verdict]:
    """token -> who maintains its book (wire/maintained.py), in two round trips."""
    return await verdicts(
        redis, prefix, {t: {"writer": r.writer, "fence": r.fence} for t, r in rows.items()}
    )


def rates(previous: dict[str, Row], current: dict[str, Row], seconds: float) -> dict[str, float]:
    """Entries per second of each book between two snapshots `seconds` apart."""
    return {
        t: ((r.seq or 0) - ((previous[t].seq or 0) if t in previous else 0)) / max(seconds, 1e-9)
        for t, r in current.items()
    }


def table(
    rows: dict[str, Row],
    rates: dict[str, float],
    limit: int,
    writers: dict[str, Verdict] | None = None,
) -> Table:
    """The table: one row per book, sorted by events/s then seq; with `writers`, a column
    saying who maintains each and the title counting the unmaintained."""
    writers = writers or {}
    orphans = sum(
        not v.live for t, v in writers.items() if rows.get(t) and rows[t].status == "synced"
    )
    title = f"polybus top — {len(rows)} books"
    if orphans:
        title += f", {orphans} synced but unmaintained"
    t = Table(title=title, expand=True)
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
        *([("writer", "left")] if writers else []),
        ("ev/s", "right"),
    ]:
        t.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=name != "market",
            min_width=_MIN_WIDTH.get(name),
        )
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
            *([_writer_cell(writers.get(token))] if writers else []),
            f"{rates.get(token, 0.0):.1f}",
        )
    return t


def _writer_cell(verdict: Verdict | None) -> str:
    return "?" if verdict is None else WRITER_CELL.get(verdict.state, "?")


async def top(
    redis: Client,
    prefix: str,
    *,
    rows: int = 30,
    once: bool = False,
    interval: float = 1.0,
    stop: asyncio.Event | None = None,
) -> int:
    """Refresh the table in place until `stop` is set (or print it once)."""
    console = Console()
    stop = asyncio.Event() if stop is None else stop
    try:
        previous, then = await snapshot(redis, prefix), time.monotonic()
        writers = await maintainers(redis, prefix, previous)
        if once:
            console.print(table(previous, {}, rows, writers))
            return 0
        with Live(
            table(previous, {}, rows, writers), console=console, refresh_per_second=4
        ) as live:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                current, now = await snapshot(redis, prefix), time.monotonic()
                writers = await maintainers(redis, prefix, current)
                live.update(table(current, rates(previous, current, now - then), rows, writers))
                previous, then = current, now
        return 0
    finally:
        await redis.aclose()

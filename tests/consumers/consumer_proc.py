"""A consumer process for tests: follow tokens, record every callback, report on `stop`.

    python -m tests.consumers.consumer_proc REDIS_URL TOKEN[,TOKEN…] REPORT NAME

Prints `ready` once every book is synced and its first book callback (from the hash or the
stream) has fired, so what it records from then on are stream entries only; on a `stop` line
on stdin writes REPORT, one JSON object: events per token in order, the count of entries
applied, and the largest delivery delay (now − feeder rx) seen. Its cursor hash is published
as consumer NAME every 0.1 s, so the test can see when it has caught up.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from polybus import MarketFeed
from polybus.cli import configure_logging


async def main(url: str, tokens: list[str], report: str, name: str) -> None:
    feed = MarketFeed(url, name=name, cursor_interval=0.1)
    seen: dict[str, list[list[str]]] = {t: [] for t in tokens}
    booked: set[str] = set()

    def record(data: dict[str, Any]) -> None:
        if data["event_type"] == "book":
            booked.add(data["asset_id"])
        seen[data["asset_id"]].append(
            [
                data["event_type"],
                data.get("timestamp", ""),
                data.get("price", ""),
                data.get("size", ""),
                data.get("hash", ""),
            ]
        )

    feed.on_price_change = feed.on_book_update = feed.on_trade = record
    await feed.connect()
    await feed.subscribe(tokens)

    def ready() -> bool:
        books = [feed.get_order_book(t) for t in tokens]
        return booked >= set(tokens) and all(b and b.status == "synced" for b in books)

    while not ready():  # noqa: ASYNC110 (polling the library's public view, as a strategy would)
        await asyncio.sleep(0.02)
    for t in tokens:
        seen[t].clear()  # compare what arrives from now on
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    data = orjson.dumps({"seen": seen, "events": feed.events, "lag": feed.max_lag_ms / 1000})
    await asyncio.to_thread(Path(report).write_bytes, data)
    await feed.disconnect()
    print("done", flush=True)


if __name__ == "__main__":
    configure_logging("warning")  # stdout is our protocol with the test: logs go to stderr
    asyncio.run(main(sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4]))

"""A consumer process for tests: follow tokens, record every callback, report on `stop`.

    python -m tests.consumers.consumer_proc REDIS_URL TOKEN[,TOKEN…] REPORT

Prints `ready` once every book is synced; on a `stop` line on stdin writes REPORT, one JSON
object: events per token in order, the count, and the largest lag (now − feeder rx) seen.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from consumers import MarketFeed


async def main(url: str, tokens: list[str], report: str) -> None:
    feed = MarketFeed(url)
    seen: dict[str, list[list[str]]] = {t: [] for t in tokens}
    lag = 0.0

    def record(data: dict[str, Any]) -> None:
        nonlocal lag
        seen[data["asset_id"]].append([data["event_type"], data.get("timestamp", ""),
                                       data.get("price", ""), data.get("size", ""),
                                       data.get("hash", "")])
        book = feed._books[data["asset_id"]]
        if book.rx:  # entries only: a reloaded hash has no receive time
            lag = max(lag, time.time() - book.rx / 1e6)

    feed.on_price_change = feed.on_book_update = feed.on_trade = record
    await feed.connect()
    await feed.subscribe(tokens)
    def synced() -> bool:
        return all(feed.get_order_book(t).status == "synced" for t in tokens)  # type: ignore[union-attr]

    while not synced():  # noqa: ASYNC110 (polling the library's public view, as a strategy would)
        await asyncio.sleep(0.02)
    for t in tokens:
        seen[t].clear()  # compare what arrives from now on
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    data = orjson.dumps({"seen": seen, "events": feed.events, "lag": lag})
    await asyncio.to_thread(Path(report).write_bytes, data)
    await feed.disconnect()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2].split(","), sys.argv[3]))

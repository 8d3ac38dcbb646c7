"""What one full cyclic-GC collection costs a process holding polybus's books.

    python bench/gc_pause.py [--tokens 200,2000,20000] [--levels 30]

A full collection stops the whole process (every socket, every callback) while it walks every
tracked object. This builds, in one process, what a feeder or a `MarketFeed` holds: the modules
of the feeder and the consumers, then N `OrderBook`s of `--levels` levels a side, and times a
full `gc.collect()` (thread CPU time: no other process's scheduling counted):

- with nothing frozen (how every process ran before the console face froze its start-up);
- after `gc.freeze()` of the start-up (what `polybus/cli.py` does `SETTLE_AFTER` s in);
- with the books frozen too (the floor: nothing tracked left to walk).

Not a test: figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import time

import polybus.consumers.feed
import polybus.feeder.app  # noqa: F401  (the modules a feeder holds)
from polybus.wire.book import OrderBook


def full_collection_ms(rounds: int = 3) -> float:
    """The cheapest of `rounds` full collections, ms of this thread's CPU."""
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        gc.collect()
        best = min(best, time.thread_time() - start)
    return best * 1000


def books(n: int, levels: int) -> list[OrderBook]:
    """`n` books of `levels` levels a side, as a process following `n` tokens holds."""
    out = []
    for i in range(n):
        book = OrderBook(asset_id=str(i))
        bids = [(f"0.{p:03d}", "100") for p in range(100, 100 + levels)]
        asks = [(f"0.{p:03d}", "100") for p in range(600, 600 + levels)]
        book.replace(bids, asks)
        out.append(book)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", default="200,2000,20000")
    parser.add_argument("--levels", type=int, default=30, help="levels a side")
    args = parser.parse_args()
    print(
        f"{'tokens':>7} {'tracked':>9} {'nothing frozen':>15} {'start frozen':>13}"
        f" {'all frozen':>11}"
    )
    for n in (int(t) for t in args.tokens.split(",")):
        gc.unfreeze()
        gc.collect()
        held = books(n, args.levels)
        tracked = len(gc.get_objects())
        none = full_collection_ms()
        gc.unfreeze()
        del held
        gc.collect()
        gc.freeze()  # the start-up: modules and all, as the console face does
        held = books(n, args.levels)
        start = full_collection_ms()
        gc.freeze()
        frozen = full_collection_ms()
        print(f"{n:>7,} {tracked:>9,} {none:>12.1f} ms {start:>10.1f} ms {frozen:>8.1f} ms")
        del held


if __name__ == "__main__":
    main()

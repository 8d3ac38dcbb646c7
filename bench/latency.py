"""Exchange send → consumer callback latency, per event, with real processes on this machine.

    python bench/latency.py [--rates 1000,10000,50000] [--consumers 1,10] [--seconds 10]
                            [--tokens 200] [--per-frame 1]

Per run (each rate × consumer count, everything fresh): a private redis-server
(polybus.redisproc.RedisServer); a fake exchange in its own process (this file, `--exchange`)
speaking the market channel (PROTOCOL.md §2–3: the initial subscription, `operation`
subscribes, PING/PONG, one array frame of `book`s, then two-leg `price_change`s round-robin
over the markets at the offered rate); `polybus feed` in its own process on the production
code paths with fast timings (polybus.rig.fast_env); and N `MarketFeed` processes (this file,
`--consume`) following every token and noting, per `on_price_change`, the receive time and
the event's number.

Each element's `hash` is `<send ns>-<event number>`, stamped just before its frame is sent, so
every event is unique and carries its own send time. After the run the streams are read back:
each entry's `rx` (the feeder's receive time, µs) and its id (Redis' clock at XADD, in ms, taken
at the middle of that ms: ±0.5 ms) split the latency into send→feeder receive, receive→XADD and
XADD→callback. Delivered share counts callbacks no later than 1 s after the last send.
CPU is each process's user+system time over the send window plus that second (/proc).

A simulator hook was not used: its engine emits trades, books and both legs per action, so
neither the offered event rate nor a per-event stamp is exact; this exchange does nothing
but send. It never sends faster than the feeder reads: when the feeder's socket backs up,
`send` waits (TCP backpressure), so the events/s it managed are printed beside the offered rate.
Not a test: figures for the notes.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from benchkit import cpu_seconds, tokens_of, until_synced
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from polybus.consumers import MarketFeed
from polybus.redisio import connect
from polybus.redisproc import RedisServer, free_port
from polybus.rig import fast_env
from polybus.wire import keys


ROOT = Path(__file__).resolve().parents[1]
TICK_S = 0.001
"""The exchange sends what is due every tick (asyncio's sleep is about 1 ms at best)."""


# --- the fake exchange process ----------------------------------------------------------------
BID, ASK = "0.40", "0.60"
"""Every book is one bid and one ask; every price change moves a level behind them, so the
stated tops are always true and the feeder never has a reason to resync."""


@dataclass
class Exchange:
    """Subscriptions per connection, and the flow sent to them."""

    tokens: list[str]
    subs: dict[ServerConnection, set[str]] = field(default_factory=dict)
    sent: int = 0

    def book(self, token: str) -> dict[str, Any]:
        return {
            "market": self.market_of(token),
            "asset_id": token,
            "timestamp": str(time.time_ns() // 1_000_000),
            "hash": "0" * 40,
            "bids": [{"price": BID, "size": "10"}],
            "asks": [{"price": ASK, "size": "10"}],
            "tick_size": "0.01",
            "last_trade_price": "",
            "event_type": "book",
        }

    def market_of(self, token: str) -> str:
        return "0x" + format((int(token) - 10**20) // 2, "064x")

    async def handle(self, ws: ServerConnection) -> None:
        held = self.subs.setdefault(ws, set())
        try:
            first = orjson.loads(await ws.recv())
            await self.add(ws, held, first.get("assets_ids", []))
            async for text in ws:
                if text == "PING":
                    await ws.send("PONG")
                    continue
                msg = orjson.loads(text)
                if msg.get("operation") == "subscribe":
                    await self.add(ws, held, msg.get("assets_ids", []))
                elif msg.get("operation") == "unsubscribe":
                    held.difference_update(msg.get("assets_ids", []))
        except ConnectionClosed:
            pass
        finally:
            self.subs.pop(ws, None)

    async def add(self, ws: ServerConnection, held: set[str], assets: list[str]) -> None:
        new = [a for a in assets if a not in held]
        if assets and not new:
            await ws.send("NO NEW ASSETS")
            return
        held.update(new)
        await ws.send(orjson.dumps([self.book(a) for a in new]).decode())

    def message(self, m: int, send_ns: int) -> dict[str, Any]:
        """Market `m`'s order event: YES and NO legs, each with its own event number."""
        yes, no = self.tokens[2 * m], self.tokens[2 * m + 1]
        size = str(1 + self.sent % 997)
        legs = []
        for token, price, side in ((yes, "0.30", "BUY"), (no, "0.70", "SELL")):
            legs.append(
                {
                    "asset_id": token,
                    "price": price,
                    "size": size,
                    "side": side,
                    "hash": f"{send_ns}-{self.sent}",
                    "best_bid": BID,
                    "best_ask": ASK,
                }
            )
            self.sent += 1
        return {
            "market": self.market_of(yes),
            "price_changes": legs,
            "timestamp": str(send_ns // 1_000_000),
            "event_type": "price_change",
        }

    async def flow(self, rate: float, seconds: float, per_frame: int) -> tuple[int, int]:
        """Send `rate` events/s for `seconds`; (events sent, ns of the last send)."""
        markets, m = len(self.tokens) // 2, 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (now := loop.time()) < start + seconds:
            due = min(int((now - start) * rate) - self.sent, int(rate * 0.05) + 2)
            while due > 0:
                frame = []
                send_ns = time.time_ns()
                for _ in range(min(per_frame, (due + 1) // 2)):
                    frame.append(self.message(m, send_ns))
                    m, due = (m + 1) % markets, due - 2
                await self.send(frame)
            await asyncio.sleep(TICK_S)
        return self.sent, time.time_ns()

    async def send(self, frame: list[dict[str, Any]]) -> None:
        """To each connection the messages of its markets: one object, or an array of them."""
        for ws, held in list(self.subs.items()):
            mine = [m for m in frame if m["price_changes"][0]["asset_id"] in held]
            if mine:
                text = orjson.dumps(mine[0] if len(mine) == 1 else mine).decode()
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(text)


async def exchange(port: int, n: int) -> None:
    """Serve; on `go RATE SECONDS PER_FRAME` (stdin) send the flow and print `sent N END_NS`."""
    ex = Exchange(tokens_of(n))
    async with serve(ex.handle, "127.0.0.1", port, max_size=None, compression=None):
        print("ready", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            rate, seconds, per_frame = line.split()[1:]
            sent, end = await ex.flow(float(rate), float(seconds), int(per_frame))
            print(f"sent {sent} {end}", flush=True)


# --- the consumer process ---------------------------------------------------------------------
async def consume(url: str, n: int, out: str) -> None:
    """Follow `n` tokens; on `stop` (stdin) write (event number, receive ns) per callback."""
    tokens = tokens_of(n)
    feed = MarketFeed(url, name=f"lat{os.getpid()}")
    numbers, at = array.array("q"), array.array("q")

    def noted(d: dict[str, Any]) -> None:
        at.append(time.time_ns())
        numbers.append(int(d["hash"].rpartition("-")[2]))

    feed.on_price_change = noted
    assert await feed.connect()
    await feed.subscribe(tokens)
    await until_synced(feed, tokens)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    Path(out).write_bytes(orjson.dumps({"n": numbers.tolist(), "at": at.tolist()}))
    await feed.disconnect()


# --- one run ----------------------------------------------------------------------------------
async def child(*argv: str, **kw: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, **kw
    )


async def line_of(proc: asyncio.subprocess.Process, timeout: float = 120) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().strip()


async def tell(proc: asyncio.subprocess.Process, text: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(text.encode() + b"\n")
    await proc.stdin.drain()


def feeder_env(args: argparse.Namespace, ws_url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **fast_env(),
        "POLYBUS_TOKENS": ",".join(tokens_of(args.tokens)),
        "WS_MARKET_URL": ws_url,
        "CLOB_URL": f"http://127.0.0.1:{free_port()}",  # no REST: books come on the socket
        "REDIS_URL": redis_url,
        "POLYBUS_FEEDER_ID": "latency",
    }


@dataclass
class Run:
    rate: float
    consumers: int
    seconds: float
    load: str = ""
    """The 1/5/15-minute load averages when the run began (the machine is shared)."""
    sent: int = 0
    end_ns: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    commands: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Redis command -> (calls/s, µs per call) over the window (INFO commandstats)."""
    received: list[dict[str, list[int]]] = field(default_factory=list)
    stamps: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    """event number -> (send ns, feeder rx µs, XADD ms)."""


MID_MS_NS = 500_000
"""An id's ms is Redis' clock truncated: the XADD happened within that ms, taken at its middle
(so receive→XADD and XADD→callback are each ±0.5 ms)."""


async def run_one(args: argparse.Namespace, rate: float, n_consumers: int, tmp: Path) -> Run:
    run = Run(rate, n_consumers, args.seconds)
    server = RedisServer()
    server.start()
    procs: list[asyncio.subprocess.Process] = []
    try:
        port = free_port()
        ex = await child(__file__, "--exchange", str(port), str(args.tokens))
        procs.append(ex)
        assert await line_of(ex, 30) == "ready"
        log = (tmp / f"feeder-{rate:.0f}-{n_consumers}.log").open("wb")
        feeder = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "polybus", "feed"),
            stdout=log,
            stderr=log,
            env=feeder_env(args, f"ws://127.0.0.1:{port}/ws/market", server.url),
            cwd=tmp,
        )
        procs.append(feeder)
        consumers = [
            await child(__file__, "--consume", server.url, str(args.tokens), str(tmp / f"c{i}"))
            for i in range(n_consumers)
        ]
        procs.extend(consumers)
        for c in consumers:
            assert await line_of(c) == "ready"
        await measure(run, args, ex, feeder, consumers, server)
        for i, c in enumerate(consumers):
            await tell(c, "stop")
            await asyncio.wait_for(c.wait(), 60)
            run.received.append(orjson.loads((tmp / f"c{i}").read_bytes()))
        run.stamps = await stamps(server.url, args.tokens)
    finally:
        for proc in reversed(procs):  # the exchange last: the feeder logs no drop at the end
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        server.close()
    return run


async def measure(
    run: Run,
    args: argparse.Namespace,
    ex: asyncio.subprocess.Process,
    feeder: asyncio.subprocess.Process,
    consumers: list[asyncio.subprocess.Process],
    server: RedisServer,
) -> None:
    """The flow, then the 1 s allowed after it; CPU of each process over both."""
    assert server.proc is not None
    pids = {"exchange": ex.pid, "feeder": feeder.pid, "redis": server.proc.pid}
    pids.update({f"consumer{i}": c.pid for i, c in enumerate(consumers)})
    run.load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with server.sync_client() as r:
        r.config_resetstat()
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    began = time.monotonic()
    await tell(ex, f"go {run.rate} {args.seconds} {args.per_frame}")
    _, sent, end = (await line_of(ex, args.seconds + 60)).split()
    run.sent, run.end_ns = int(sent), int(end)
    await asyncio.sleep(1.0)
    wall = time.monotonic() - began
    run.cpu = {k: (cpu_seconds(p) - before[k]) / wall for k, p in pids.items()}
    with server.sync_client() as r:
        stats: Any = r.info("commandstats")
    run.commands = {
        k.removeprefix("cmdstat_"): (v["calls"] / wall, float(v["usec_per_call"]))
        for k, v in sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:4]
    }


async def stamps(url: str, n: int) -> dict[int, tuple[int, int, int]]:
    """Every price change in the streams: event number -> (send ns, rx µs, XADD ms)."""
    redis = await connect(url, decode_responses=True)
    out: dict[int, tuple[int, int, int]] = {}
    try:
        for token in tokens_of(n):
            start = "-"
            while True:
                batch: Any = await redis.xrange(keys.stream(token), start, "+", count=5000)
                if not batch:
                    break
                for entry_id, f in batch:
                    if f.get("type") == "price_change":
                        sent_ns, _, number = f["hash"].partition("-")
                        xadd_ms = int(entry_id.partition("-")[0])
                        out[int(number)] = (int(sent_ns), int(f["rx"]), xadd_ms)
                start = "(" + batch[-1][0]
    finally:
        await redis.aclose()
    return out


# --- figures ----------------------------------------------------------------------------------
def pcts(values: list[float]) -> str:
    if not values:
        return "no events"
    v = sorted(values)
    at = [v[min(len(v) - 1, int(q * len(v)))] for q in (0.5, 0.99, 0.999)]
    return (
        f"p50 {at[0]:8.2f}  p99 {at[1]:8.2f}  p99.9 {at[2]:8.2f}  max {v[-1]:8.2f} ms  (n={len(v)})"
    )


def show(run: Run) -> None:
    deadline = run.end_ns + 1_000_000_000
    total, callback, shares = [], [], []
    for rec in run.received:
        seen = set()
        for number, at in zip(rec["n"], rec["at"], strict=True):
            if at > deadline or number not in run.stamps:
                continue
            seen.add(number)
            send_ns, _, xadd_ms = run.stamps[number]
            total.append((at - send_ns) / 1e6)
            callback.append((at - xadd_ms * 1_000_000 - MID_MS_NS) / 1e6)
        shares.append(100 * len(seen) / max(1, run.sent))
    to_rx = [(rx * 1000 - s) / 1e6 for s, rx, _ in run.stamps.values()]
    to_xadd = [(x * 1e6 + MID_MS_NS - rx * 1000) / 1e6 for _, rx, x in run.stamps.values()]
    print(
        f"\n== {run.rate:,.0f} events/s offered, {run.consumers} consumer(s), load {run.load}: "
        f"{run.sent:,} sent ({run.sent / run.seconds:,.0f}/s), {len(run.stamps):,} in the streams"
    )
    print("  delivered within 1 s of the end: " + ", ".join(f"{s:.1f}%" for s in shares))
    print(f"  send→callback       {pcts(total)}")
    print(f"  send→feeder rx      {pcts(to_rx)}")
    print(f"  feeder rx→XADD      {pcts(to_xadd)}")
    print(f"  XADD→callback       {pcts(callback)}")
    print("  cores busy: " + "  ".join(f"{k} {v:.2f}" for k, v in run.cpu.items()))
    print(
        "  redis, busiest commands: "
        + ", ".join(f"{k} {n:,.0f}/s at {us:.1f} us" for k, (n, us) in run.commands.items())
    )


def numbers(text: str) -> Sequence[float]:
    return [float(x) for x in text.split(",") if x]


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="polybus-latency-"))
    print(
        f"{args.tokens} tokens, {args.seconds:g} s per run, {args.per_frame} message(s) per "
        f"frame, logs in {tmp}; load: {Path('/proc/loadavg').read_text().strip()}"
    )
    for rate in numbers(args.rates):
        for n in numbers(args.consumers):
            show(await run_one(args, rate, int(n), tmp))
    print(f"\nload after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--exchange":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(exchange(int(sys.argv[2]), int(sys.argv[3])))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--consume":
        asyncio.run(consume(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rates", default="1000,10000,50000", help="events/s, comma separated")
    parser.add_argument("--consumers", default="1,10", help="consumer processes, comma separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=200, help="even: YES/NO pairs")
    parser.add_argument("--per-frame", type=int, default=1, help="price_change messages a frame")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))

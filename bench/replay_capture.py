"""Serve a capture of market-channel frames to a real feeder and count its alarms. Not a test.

    python bench/replay_capture.py CAPTURE [--gap-ms 5] [--speed 1]

CAPTURE is a JSON list of messages (one frame each), a JSON object or array (one frame), or
JSON lines (one raw frame per line) — e.g. frames other people captured live. Nothing is
copied: the frames go into a temporary raw recording served by `polybus replay --serve`'s
server to an in-process feeder subscribed to every token the capture names, writing to a
private redis-server. Prints, per token, the `status` entries beyond the first `connected`
and, for the run, resubscribes, top-of-book mismatches and the resync ladder's counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.redisproc import private_redis
from polybus.replay.serve import ReplayServer
from polybus.wire import keys


def frames_of(path: Path) -> list[str]:
    """The capture's frames as the exchange would have sent them."""
    text = path.read_text()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return [line for line in text.splitlines() if line.strip()]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        if any("event_type" not in m or m.get("event_type") == "book" for m in value[:1]):
            return [orjson.dumps(m).decode() for m in value]
    return [orjson.dumps(value).decode()]


def tokens_of(frames: list[str]) -> list[str]:
    found: dict[str, None] = {}

    def visit(msg: Any) -> None:
        if isinstance(msg, list):
            for m in msg:
                visit(m)
        elif isinstance(msg, dict):
            if isinstance(msg.get("asset_id"), str):
                found[msg["asset_id"]] = None
            for change in msg.get("price_changes") or ():
                if isinstance(change, dict) and isinstance(change.get("asset_id"), str):
                    found[change["asset_id"]] = None

    for frame in frames:
        with contextlib.suppress(orjson.JSONDecodeError):
            visit(orjson.loads(frame))
    return [t for t in found if t.isdigit()]


async def run(capture: Path, gap_ms: float, speed: float) -> None:
    frames = frames_of(capture)
    tokens = tokens_of(frames)
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "capture.jsonl"
        t0 = time.time_ns() // 1000
        lines = [{"kind": "open", "conn": 0, "epoch": 1, "t": t0, "machine": 1}]
        lines += [
            {"kind": "rx", "conn": 0, "t": t0 + int((i + 1) * gap_ms * 1000), "frame": f}
            for i, f in enumerate(frames)
        ]
        rec.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
        redis_proc = private_redis()
        server = ReplayServer(rec, speed=speed)
        await server.start()
        config = FeederConfig(
            tokens=tuple(tokens),
            ws_url=server.url,
            redis_url=redis_proc.url,
            feeder_id="capture",
            stats_interval=3600.0,
        )
        feeder = Feeder(config)
        task = asyncio.create_task(feeder.run())
        try:
            await asyncio.wait_for(server.done.wait(), 120)
            deadline = time.monotonic() + 5
            while (feeder.mirror.pending or len(feeder.outbox)) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(feeder.mirror.grace * 2)  # a late check would fire here
            await report(feeder, tokens, len(frames))
        finally:
            feeder.stop()
            await asyncio.wait_for(task, 10)
            await server.stop()
            redis_proc.stop()


async def report(feeder: Feeder, tokens: list[str], frames: int) -> None:
    redis = feeder.redis
    print(f"capture: {frames} frames, {len(tokens)} tokens subscribed")
    alarms = 0
    for token in tokens:
        entries = await redis.xrange(keys.stream(token))
        status = [(f["state"], f["reason"]) for _, f in entries if f["type"] == "status"]
        extra = status[1:] if status[:1] and status[0][0] == "connected" else status
        alarms += len(extra)
        book = await redis.hgetall(keys.book(token))
        print(
            f"  token …{token[-6:]}: entries={len(entries)} status={book.get('status')} "
            f"extra_status_entries={len(extra)} {extra[:4]}"
        )
    resubscribes = sum(c.stats.resubscribes for c in feeder.connections)
    print(f"status entries beyond 'connected': {alarms}")
    print(f"resubscribes: {resubscribes}   top-of-book mismatches: {feeder.mirror.mismatches}")
    print(f"ladder: {feeder.ladder_counts()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("capture", type=Path)
    parser.add_argument("--gap-ms", type=float, default=5.0, help="time between frames")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed (0 = max)")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(run(args.capture, args.gap_ms, args.speed))


if __name__ == "__main__":
    main()

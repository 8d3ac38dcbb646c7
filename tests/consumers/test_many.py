"""Five consumer processes at once see the same event sequence per token."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import orjson

from polybus.wire import keys
from tests.e2e.harness import Rig, rig
from tests.support import wait_for


def caught_up(r: Rig, names: list[str]) -> Callable[[], Awaitable[bool]]:
    """A predicate: every consumer's published cursor is at every token's newest seq, and
    the newest seqs did not move since the previous poll (the feeder has flushed)."""
    previous: list[str] = []

    async def check() -> bool:
        nonlocal previous
        pipe = r.redis.pipeline(transaction=False)
        for token in r.tokens:
            pipe.hget(keys.book(token), "seq")
        newest = await pipe.execute()
        stable, previous = newest == previous, newest
        for name in names:
            cursor = await r.redis.hgetall(keys.consumer(name))
            if any(cursor.get(f"seq:{t}") != s for t, s in zip(r.tokens, newest, strict=True)):
                return False
        return stable

    return check


async def test_five_processes_see_the_same_sequence(redis_server, tmp_path) -> None:
    """Five processes, joining mid-flow, end with identical per-token event sequences."""
    async with rig(redis_server, markets=5, rate=1000.0, silence_timeout=30.0) as r:
        names = [f"proc{i}" for i in range(5)]
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.consumers.consumer_proc",
                redis_server.url,
                ",".join(r.tokens),
                str(tmp_path / f"{name}.json"),
                name,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for name in names
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line.strip() == b"ready"
            start, began = r.feeder.published, time.monotonic()
            await wait_for(lambda: r.feeder.published >= start + 3000, 20, "3000 more events")
            rate = (r.feeder.published - start) / (time.monotonic() - began)
            await r.sim.pause()
            await wait_for(caught_up(r, names), 15, "every consumer caught up", interval=0.2)
            reports = []
            for name, proc in zip(names, procs, strict=True):
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(b"stop\n")
                await proc.stdin.drain()
                assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"done"
                reports.append(orjson.loads((tmp_path / f"{name}.json").read_bytes()))
            for token in r.tokens:  # each joined a little later: its list is a suffix
                runs = sorted((rep["seen"][token] for rep in reports), key=len)
                assert len(runs[0]) > 50, token
                assert all(run[-len(runs[0]) :] == runs[0] for run in runs[1:]), token
            total = sum(rep["events"] for rep in reports)
            print(
                f"five consumers at ~{rate:.0f} entries/s: {total} entries applied in all, "
                f"max delivery delay {max(rep['lag'] for rep in reports) * 1000:.0f} ms"
            )
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()

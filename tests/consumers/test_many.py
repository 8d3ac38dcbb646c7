"""Five consumer processes at once see the same event sequence per token."""

from __future__ import annotations

import asyncio
import sys

import orjson

from tests.e2e.harness import rig


async def test_five_processes_see_the_same_sequence(redis_server, tmp_path) -> None:
    """Five processes, joining mid-flow, end with identical per-token event sequences."""
    async with rig(redis_server, markets=5, rate=1000.0, silence_timeout=30.0) as r:
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.consumers.consumer_proc", redis_server.url,
            ",".join(r.tokens), str(tmp_path / f"{i}.json"), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE) for i in range(5)]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line.strip() == b"ready"
            await asyncio.sleep(3.0)
            await r.sim.pause()
            await asyncio.sleep(1.0)  # let the last entries reach every consumer
            reports = []
            for i, proc in enumerate(procs):
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(b"stop\n")
                await proc.stdin.drain()
                assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"done"
                reports.append(orjson.loads((tmp_path / f"{i}.json").read_bytes()))
            for token in r.tokens:  # each joined a little later: its list is a suffix
                runs = sorted((rep["seen"][token] for rep in reports), key=len)
                assert len(runs[0]) > 50, token
                assert all(run[-len(runs[0]):] == runs[0] for run in runs[1:]), token
                assert all(runs[-1][-len(run):] == run for run in runs), token
            total = sum(rep["events"] for rep in reports)
            print(f"five consumers: {total} events in all, "
                  f"max lag {max(rep['lag'] for rep in reports) * 1000:.0f} ms")
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()

"""Operating a feeder process: metrics, /healthz, and `polybus health` noticing a kill."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.request

from polybus.simulator import SimConfig, Simulator
from tests.support import free_port, wait_for


async def run_health(url: str) -> int:
    """Exit code of `polybus health` against this Redis."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus",
        "health",
        "--redis-url",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_metrics_healthz_and_health_after_a_kill(redis_server, tmp_path) -> None:
    """A live feeder serves metrics and is healthy; SIGKILL makes `polybus health` fail fast."""
    sim = Simulator(SimConfig(markets=4, seed=2, rate=200.0))
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    port = free_port()
    env = {
        **os.environ,
        "POLYBUS_TOKENS": ",".join(sim.engine.tokens()),
        "WS_MARKET_URL": sim.ws_url,
        "REDIS_URL": redis_server.url,
        "POLYBUS_FEEDER_ID": "ops",
        "POLYBUS_HEALTH_INTERVAL": "0.5",
        "POLYBUS_METRICS_PORT": str(port),
        "POLYBUS_METRICS_HOST": "127.0.0.1",
    }
    log = (tmp_path / "feeder.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus", "feed", stdout=log, stderr=log, env=env, cwd=tmp_path
    )
    try:

        async def healthy() -> bool:
            return await run_health(redis_server.url) == 0

        await wait_for(healthy, 20, "`polybus health` to pass", interval=0.3)
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "polybus_frames_total" in body and 'polybus_events_total{type="book"}' in body
        assert 'polybus_books{status="synced"} 8.0' in body
        healthz = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/healthz")
        assert healthz == (200, "ok\n")

        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        killed = time.monotonic()

        async def unhealthy() -> bool:
            return await run_health(redis_server.url) == 1

        await wait_for(unhealthy, 10, "`polybus health` to fail", interval=0.2)
        # 3 missed heartbeats (3 s), plus starting `polybus health` on a loaded machine
        assert time.monotonic() - killed < 8.0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
        await sim.stop()

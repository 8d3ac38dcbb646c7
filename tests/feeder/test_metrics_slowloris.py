"""A slowloris against the metrics port of a real feeder process with few descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from polybus.feeder.metrics import MAX_CONNECTIONS
from polybus.simulator import SimConfig, Simulator
from tests.support import free_port, wait_for


FD_LIMIT = 256
"""The feeder's RLIMIT_NOFILE: 1,100 half-open requests would exhaust it many times over."""
ATTACK = 1100
MAX_OPENS = 6000
"""The attacker reopens what the server closes, but never more than this many times in all."""

LAUNCH = (
    "import resource, sys\n"
    "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, hard))\n"
    "from polybus.cli import main\n"
    "sys.exit(main(['feed']))\n"
)


def descriptors(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def healthz(port: int) -> tuple[int, str] | None:
    """GET /healthz on a fresh connection; None when the connection fails or hangs."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 2)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return (int(head.split()[1]), body.decode()) if head.startswith(b"HTTP/1.1") else None


class Slowloris:
    """Keeps ATTACK half-sent requests open against a port, reopening those closed, until
    stopped or MAX_OPENS connections have been made (loopback only)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.open: list[asyncio.StreamWriter] = []
        self.opens = 0
        self.stop = asyncio.Event()

    async def _one(self) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 2)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            self.open.append(writer)

    async def run(self) -> None:
        while not self.stop.is_set() and self.opens < MAX_OPENS:
            self.open = [w for w in self.open if not w.transport.is_closing()]
            batch = min(ATTACK - len(self.open), 100, MAX_OPENS - self.opens)
            self.opens += batch
            await asyncio.gather(*(self._one() for _ in range(batch)))
            await asyncio.sleep(0.1)

    def close(self) -> None:
        for writer in self.open:
            writer.close()


async def test_slowloris_cannot_starve_the_feeder(redis_server, tmp_path) -> None:
    """1,100 half-sent requests held against /metrics leave the feeder's descriptors bounded,
    /healthz answering, and its WebSocket able to reconnect after a drop."""
    sim = Simulator(SimConfig(markets=2, seed=11, rate=100.0))
    await sim.start()
    port = free_port()
    env = {
        **os.environ,
        "POLYBUS_TOKENS": ",".join(sim.engine.tokens()),
        "WS_MARKET_URL": sim.ws_url,
        "REDIS_URL": redis_server.url,
        "POLYBUS_FEEDER_ID": "loris",
        "POLYBUS_HEALTH_INTERVAL": "0.5",
        "WS_RECONNECT_BASE_DELAY": "0.05",
        "WS_RECONNECT_MAX_DELAY": "0.5",
        "POLYBUS_METRICS_PORT": str(port),
    }
    log = (tmp_path / "feeder.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCH, stdout=log, stderr=log, env=env, cwd=tmp_path
    )
    attacker = Slowloris(port)
    attack: asyncio.Task[None] | None = None
    peak = 0
    try:

        async def healthy() -> bool:
            return await healthz(port) == (200, "ok\n")

        await wait_for(healthy, 20, "the feeder to be healthy", interval=0.2)
        baseline = descriptors(proc.pid)
        attack = asyncio.create_task(attacker.run())

        async def attacked() -> bool:
            nonlocal peak
            peak = max(peak, descriptors(proc.pid))
            return attacker.opens >= ATTACK

        await wait_for(attacked, 30, "1,100 half-sent requests", interval=0.05)
        await wait_for(healthy, 10, "/healthz answering during the attack", interval=0.1)

        accepted = sim.stats.accepted
        sim.drop_all()

        async def reconnected() -> bool:
            nonlocal peak
            peak = max(peak, descriptors(proc.pid))
            return sim.stats.accepted > accepted and await healthy()

        await wait_for(reconnected, 20, "the WebSocket to reconnect during the attack", 0.1)
        assert not attack.done(), "the attack was still going on"
        bound = baseline + MAX_CONNECTIONS + 8  # the cap, and a few closing
        assert peak <= bound, f"descriptors: {baseline} before, {peak} at peak"
        print(
            f"slowloris: {attacker.opens} half-sent requests, feeder descriptors "
            f"{baseline} -> peak {peak} (limit {FD_LIMIT})"
        )
    finally:
        attacker.stop.set()
        if attack is not None:
            await attack
        attacker.close()
        proc.kill()
        await proc.wait()
        log.close()
        await sim.stop()

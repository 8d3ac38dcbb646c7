"""One market-channel connection's shell: how it shares the event loop with everything else."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from websockets.asyncio.server import ServerConnection, serve

from polybus.feeder.config import FeederConfig
from polybus.feeder.connection import YIELD_EVERY, Connection
from polybus.feeder.mirror import Mirror
from polybus.feeder.outbox import Outbox
from polybus.rig import wait_for
from polybus.simulator.connection import ws_frame


BURST = 40 * YIELD_EVERY


async def test_a_reader_behind_by_a_burst_lets_other_tasks_run_while_it_drains() -> None:
    """Frames already received are handed over without suspending, so a reader draining a
    burst (a stall's backlog, a hundred snapshots at start) must yield every YIELD_EVERY
    frames: otherwise lease renewals, PINGs and other sockets wait for the whole burst."""

    async def exchange(ws: ServerConnection) -> None:
        await ws.recv()  # the subscription; then the whole burst in one write, as live
        ws.transport.write(b"".join(ws_frame(b"[]") for _ in range(BURST)))
        await ws.wait_closed()

    async with serve(exchange, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = FeederConfig(tokens=("1",), ws_url=f"ws://127.0.0.1:{port}/ws/market")
        epochs = itertools.count(1)
        conn = Connection(0, ["1"], config, Outbox(), Mirror(), lambda: next(epochs))
        seen: set[int] = set()

        async def other_task() -> None:
            while True:
                seen.add(conn.stats.frames)
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(conn.run()), asyncio.create_task(other_task())]
        try:
            await wait_for(lambda: conn.stats.frames >= BURST, 10, "the burst read")
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks)
    during = [n for n in seen if 0 < n < BURST]
    assert len(during) >= BURST // YIELD_EVERY // 2, sorted(seen)

"""The metrics endpoint: aiohttp-served, loopback by default, every connection bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from polybus.feeder.app import Feeder
from polybus.feeder.cli import register
from polybus.feeder.config import FeederConfig
from polybus.feeder.metrics import MetricsServer
from tests.support import wait_for


async def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """One HTTP/1.1 GET over a raw socket: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)  # the server closes after answering
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def half_sent(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose request headers never end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    return reader, writer


@pytest.fixture
async def served() -> AsyncIterator[MetricsServer]:
    """A metrics server for an idle feeder, with a small cap and a short deadline."""
    feeder = Feeder(FeederConfig(tokens=("1", "2")))
    server = MetricsServer(feeder, max_connections=8, timeout=0.5)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.aclose()
        await feeder.redis.aclose()


def test_metrics_bind_loopback_unless_told() -> None:
    """The default bind is 127.0.0.1; `--metrics-host` and POLYBUS_METRICS_HOST change it."""
    import argparse

    assert FeederConfig().metrics_host == "127.0.0.1"
    assert FeederConfig.from_env({"POLYBUS_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["feed", "--metrics-host", "10.0.0.5"])
    assert args.metrics_host == "10.0.0.5"


async def test_healthz_metrics_and_404(served: MetricsServer) -> None:
    """/healthz says degraded (no connection is up), /metrics is Prometheus text, else 404."""
    assert await get(served.port, "/healthz") == (503, "degraded\n")
    status, body = await get(served.port, "/metrics")
    assert status == 200 and "polybus_interest_tokens 0.0" in body
    assert 'polybus_metrics_connections_closed_total{reason="evicted"} 0.0' in body
    assert (await get(served.port, "/nope"))[0] == 404


async def test_partition_leadership_is_on_metrics(served: MetricsServer) -> None:
    """/metrics names each partition this feeder leads with its fence, and what it carries."""
    served.feeder.redundancy.gate.open[3] = 7
    status, body = await get(served.port, "/metrics")
    assert status == 200
    assert 'polybus_partition_leader{fence="7",partition="3"} 1.0' in body
    assert "polybus_partitions_carried 16.0" in body
    assert "polybus_standby_held 0.0" in body


async def test_a_half_sent_request_is_closed_at_the_deadline(served: MetricsServer) -> None:
    """Headers that never end do not hold a connection past the deadline."""
    reader, writer = await half_sent(served.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 5) == b""
    assert loop.time() - started < 2.0
    assert served.web is not None and served.web.timed_out == 1 and not served.web.open
    writer.close()


async def test_the_connection_cap_evicts_the_oldest_and_keeps_answering(
    served: MetricsServer,
) -> None:
    """Beyond the cap the oldest connections are dropped: /healthz still answers at once."""
    held = [await half_sent(served.port) for _ in range(20)]
    web = served.web
    assert web is not None
    await wait_for(lambda: web.evicted == 12, 5, "the server to accept all twenty")
    assert len(web.open) == 8
    assert (await get(served.port, "/healthz", timeout=1.0))[0] == 503
    for _, writer in held:
        writer.close()

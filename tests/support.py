"""Test support: a private redis-server per test, a local Redis Cluster, and waiting for
conditions with timeouts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from polybus.redisproc import LocalCluster, RedisServer, free_port


__all__ = ["MS", "LocalCluster", "RedisServer", "free_port", "wait_for"]


MS = float(os.environ.get("POLYBUS_TEST_MS", "0.001"))
"""One millisecond in seconds; scale every timeout by it on slow machines."""


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str = "condition",
    interval: float = 0.02,
) -> None:
    """Poll `predicate` until it is true, or fail after `timeout` seconds saying `what`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(interval)

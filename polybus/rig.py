"""What tests and benches share besides a private Redis (polybus.redisproc): waiting for a
condition with a timeout, and the feeder's timings on a short clock.

Benches may not import `tests/`, so these live here, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from polybus.feeder.config import ENV


__all__ = ["FAST", "WaitTimeout", "fast_env", "wait_for"]

FAST: dict[str, Any] = dict(
    ping_interval=0.5,
    pong_timeout=3.0,
    silence_timeout=2.0,
    snapshot_timeout=2.0,
    reconnect_base_delay=0.05,
    reconnect_max_delay=0.5,
    rate_limit_delay=0.3,
    connect_stagger=0.0,
    health_interval=0.3,
    health_ttl=2.0,
    stats_interval=3600.0,
)
"""FeederConfig timings for tests and benches: the production code paths on a short clock."""


def fast_env(**overrides: str) -> dict[str, str]:
    """FAST as environment variables, for a `polybus feed` child process.

    `silence_timeout` stays at its default: the env loader refuses a deadline below 30 s
    (quiet markets are normal), and a busy simulator never lets a socket go quiet anyway."""
    env = {ENV[k]: str(v) for k, v in FAST.items() if k != "silence_timeout"}
    return {**env, "POLYBUS_LOG_FORMAT": "json", **overrides}


class WaitTimeout(AssertionError, TimeoutError):
    """A condition did not come true in time: a failed test, a bench round that timed out."""


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str = "condition",
    interval: float = 0.02,
) -> None:
    """Poll `predicate` until it is true, or raise WaitTimeout after `timeout` s naming `what`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(interval)

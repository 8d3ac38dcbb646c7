"""Real `polybus feed` processes on one prefix, for the redundancy tests (docs/ha.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis.asyncio as aioredis

from polybus.rig import fast_env
from polybus.simulator import Simulator
from polybus.wire import keys
from polybus.wire.partitions import decode_lease


LEASE_MS = 1000
"""The lease the tests run with: a takeover within LEASE_MS + 1 s is the promise."""

ENV = fast_env(POLYBUS_LEASE_MS=str(LEASE_MS))
"""Production code paths on a shorter clock."""


@dataclass
class FeederProc:
    """One `polybus feed` child process."""

    name: str
    sim: Simulator
    redis_url: str
    tmp: Path
    extra: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None

    async def start(self) -> FeederProc:
        env = {
            **os.environ,
            **ENV,
            **self.extra,
            "POLYBUS_TOKENS": ",".join(self.sim.engine.tokens()),
            "WS_MARKET_URL": self.sim.ws_url,
            "CLOB_URL": self.sim.http_url,
            "REDIS_URL": self.redis_url,
            "POLYBUS_FEEDER_ID": self.name,
        }
        self._log = (self.tmp / f"{self.name}.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polybus",
            "feed",
            stdout=self._log,
            stderr=self._log,
            env=env,
            cwd=self.tmp,
        )
        return self

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the process and wait for it; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._log is not None:
            self._log.close()
        return code

    def log(self) -> str:
        return (self.tmp / f"{self.name}.log").read_text(errors="replace")


async def leaders(redis: aioredis.Redis, partitions: int = 16) -> dict[int, str]:
    """partition -> the feeder holding its lease (free partitions absent)."""
    values = await redis.mget([keys.lease(p) for p in range(partitions)])
    return {p: decode_lease(v).holder for p, v in enumerate(values) if v}


async def stop_all(procs: list[FeederProc]) -> None:
    for proc in procs:
        if proc.proc is not None and proc.proc.returncode is None:
            proc.proc.kill()
            await proc.proc.wait()


def warm_of(health: dict[str, str]) -> set[int]:
    """The partitions a feeder's health hash says it has warm."""
    return {int(p) for p in health.get("warm", "").split(",") if p.isdigit()}


async def health_of(redis: aioredis.Redis, name: str) -> dict[str, Any]:
    result: dict[str, Any] = await redis.hgetall(keys.feeder(name))
    return result

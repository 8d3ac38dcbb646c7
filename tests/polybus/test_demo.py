"""`polybus demo` only touches its own Redis: a private one, or REDIS_URL's cleaned after it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from polybus.redisio import connect
from tests.support import LocalCluster, RedisServer


def run_demo(env: dict[str, str], cwd, *args: str) -> tuple[int, str, str]:
    """Run `polybus demo --quiet --duration 3 …` as a process: (exit code, stdout, stderr)."""

    async def go() -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polybus",
            "demo",
            "--quiet",
            "--duration",
            "3",
            "--markets",
            "2",
            *args,
            env=env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return proc.returncode or 0, out.decode(), err.decode()

    return asyncio.run(go())


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "POLYBUS_PREFIX")}
    return {**env, "POLYBUS_LOG_LEVEL": "error", **extra}


@contextlib.contextmanager
def something_on_6379() -> Iterator[list[bytes]]:
    """A PONG-answering listener on localhost:6379 (what the old demo took for a Redis), noting
    what it is sent; when the port is taken, whatever holds it stands in (left untouched)."""
    seen: list[bytes] = []
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", 6379))
    except OSError:
        server.close()
        yield seen
        return
    server.listen(8)
    server.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    data = conn.recv(4096)
                    seen.append(data)
                    conn.sendall(b"+PONG\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(5)
        server.close()


def test_without_redis_url_the_demo_starts_and_removes_a_private_redis(tmp_path) -> None:
    """No REDIS_URL: a private server on another port, even with a Redis on :6379; gone after."""
    with something_on_6379() as seen:
        code, out, err = run_demo(demo_env(), tmp_path)
    assert code == 0, err
    found = re.search(r"demo\.redis url=redis://127\.0\.0\.1:(\d+)/0 origin='(.*?)'", out)
    assert found is not None, out
    port, origin = int(found[1]), found[2]
    assert origin.startswith("private") and port != 6379
    assert seen == [], "the demo sent something to localhost:6379"
    assert "demo.summary synced=4/4" in out
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass  # the private server is stopped


def test_with_redis_url_the_demo_leaves_nothing_behind(redis_server: RedisServer, tmp_path) -> None:
    """REDIS_URL's server holds exactly what it held before once the demo has ended."""

    async def keys() -> dict[str, str]:
        client = redis_server.client()
        try:
            return {k: await client.type(k) async for k in client.scan_iter("*")}
        finally:
            await client.aclose()

    async def seed() -> None:
        client = redis_server.client()
        await client.set("someone:else", "1")
        await client.hset("other:book:{1}", "status", "synced")
        await client.aclose()

    asyncio.run(seed())
    before = asyncio.run(keys())
    code, out, err = run_demo(demo_env(REDIS_URL=redis_server.url), tmp_path)
    assert code == 0, err
    assert "origin='REDIS_URL'" in out and "demo.summary synced=4/4" in out
    assert asyncio.run(keys()) == before


def test_with_redis_url_a_used_prefix_is_refused(redis_server: RedisServer, tmp_path) -> None:
    """A prefix that already holds keys in REDIS_URL's server is exit 2, and left as it was."""

    async def seed_and_count(seed: bool) -> int:
        client = redis_server.client()
        if seed:
            await client.hset("pm:book:{1}", "status", "synced")
        count = await client.dbsize()
        await client.aclose()
        return count

    assert asyncio.run(seed_and_count(True)) == 1
    code, _, err = run_demo(demo_env(REDIS_URL=redis_server.url), tmp_path)
    assert code == 2 and "already holds 1 keys under prefix 'pm'" in err
    assert asyncio.run(seed_and_count(False)) == 1


def test_on_a_cluster_node_url_the_demo_runs_and_leaves_nothing_behind(
    redis_cluster: LocalCluster, tmp_path
) -> None:
    """REDIS_URL naming one node of a Redis Cluster: every book syncs (keys on every primary),
    and afterwards the cluster holds exactly what it held before."""

    async def keys() -> set[str]:
        client = await connect(redis_cluster.url, decode_responses=True)
        try:
            return {k async for k in client.scan_iter("*")}
        finally:
            await client.aclose()

    async def seed() -> None:
        client = await connect(redis_cluster.url, decode_responses=True)
        await client.set("someone:else", "1")
        await client.aclose()

    asyncio.run(seed())
    before = asyncio.run(keys())
    code, out, err = run_demo(demo_env(REDIS_URL=redis_cluster.url), tmp_path)
    assert code == 0, err
    assert "origin='REDIS_URL'" in out and "demo.summary synced=4/4" in out
    assert asyncio.run(keys()) == before == {"someone:else"}

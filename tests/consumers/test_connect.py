"""MarketFeed.connect() against failures, as the seed behaves (False and on_error, never a
raise), and the seed's constructor keyword and POLYBUS_PREFIX."""

from __future__ import annotations

import pytest

from polybus.consumers import ConnectionState, MarketFeed, MarketWebSocket
from polybus.wire import keys
from polybus.wire.errors import ConfigError
from tests.consumers.bus import T1, Bus
from tests.support import RedisServer, free_port


async def failed_connect(url: str) -> Exception:
    """connect() on `url`: must return False, state FAILED, exactly one on_error."""
    feed = MarketFeed(url)
    errors: list[Exception] = []
    feed.on_error = errors.append
    assert await feed.connect() is False
    assert feed.state is ConnectionState.FAILED and not feed.is_connected
    assert len(errors) == 1
    assert await feed.subscribe([T1]) is False
    await feed.disconnect()
    return errors[0]


@pytest.mark.parametrize(
    "url",
    [
        "localhost:6379",
        "wss://ws-subscriptions-clob.polymarket.com/ws/market",
        "redis://127.0.0.1:notaport/0",
    ],
)
async def test_a_bad_url_is_false_and_a_config_error(url: str) -> None:
    """A URL that is not a Redis URL (the seed's WebSocket URL, say): False, ConfigError."""
    error = await failed_connect(url)
    assert isinstance(error, ConfigError) and "REDIS_URL" in str(error)


async def test_an_unknown_db_is_false_and_a_config_error(redis_server: RedisServer) -> None:
    """redis://…/99 on a server with 16 DBs: no retry can fix it."""
    error = await failed_connect(f"redis://127.0.0.1:{redis_server.port}/99")
    assert isinstance(error, ConfigError) and "DB index" in str(error)


async def test_a_wrong_password_is_false_and_a_config_error_without_the_password(
    redis_server: RedisServer,
) -> None:
    """A wrong password: ConfigError whose message does not repeat the password."""
    redis = redis_server.client()
    await redis.execute_command("ACL", "SETUSER", "strat", "on", ">right", "~*", "+@all")
    await redis.aclose()
    error = await failed_connect(f"redis://strat:wrong-secret@127.0.0.1:{redis_server.port}/0")
    assert isinstance(error, ConfigError) and "wrong-secret" not in str(error)


async def test_an_acl_denying_the_reads_is_false_and_a_config_error(
    redis_server: RedisServer,
) -> None:
    """A user allowed PING but not the prefix's keys: connect() fails at once, naming it."""
    redis = redis_server.client()
    await redis.execute_command(
        "ACL", "SETUSER", "other", "on", ">pw", "resetkeys", "~other:*", "+@all"
    )
    await redis.aclose()
    error = await failed_connect(f"redis://other:pw@127.0.0.1:{redis_server.port}/0")
    assert isinstance(error, ConfigError) and "ACL" in str(error)


async def test_an_unreachable_redis_is_false_with_the_connection_error() -> None:
    """Nothing listening: False like the seed; the error is the connection's (retryable),
    not a ConfigError."""
    error = await failed_connect(f"redis://127.0.0.1:{free_port()}/0")
    assert not isinstance(error, ConfigError)


async def test_the_seeds_url_keyword_is_a_redis_url(redis_server: RedisServer) -> None:
    """MarketWebSocket(url=…), the seed's constructor, connects to that Redis."""
    bus = Bus(redis_server.client())
    await bus.book(T1)
    ws = MarketWebSocket(url=redis_server.url)
    assert ws.url == redis_server.url
    assert await ws.connect() and await ws.subscribe([T1])
    assert ws.get_order_book(T1).status == "synced"
    await ws.disconnect()
    await bus.redis.aclose()


async def test_polybus_prefix_from_the_environment(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no prefix given, MarketFeed reads the keys under POLYBUS_PREFIX."""
    redis = redis_server.client()
    await redis.hset(
        keys.book(T1, "alt"),
        mapping={"status": "synced", "seq": "1", "last_id": "1-1", "bid:0.3": "10"},
    )
    monkeypatch.setenv("POLYBUS_PREFIX", "alt")
    feed = MarketFeed(redis_server.url)
    assert feed.prefix == "alt"
    assert await feed.connect() and await feed.subscribe([T1])
    book = feed.get_order_book(T1)
    assert book.status == "synced" and book.bids[0].price_str == "0.3"
    assert await redis.zscore(keys.interest("alt"), T1) is not None
    await feed.disconnect()
    await redis.aclose()

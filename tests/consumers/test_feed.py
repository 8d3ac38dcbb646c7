"""MarketFeed against simulator + feeder + a private redis-server: books that are never wrong."""

from __future__ import annotations

import asyncio

from consumers import ConnectionState, MarketFeed
from tests.consumers.helpers import feed_books_equal_truth
from tests.e2e.harness import rig
from tests.support import wait_for
from wire import keys


async def converge(feed: MarketFeed, r, timeout: float = 15.0) -> None:
    """Pause the flow; wait until the feed's books equal the simulator's truth."""
    await r.sim.pause()
    last: list[str] = []

    def done() -> bool:
        nonlocal last
        last = feed_books_equal_truth(feed, r.sim, r.tokens)
        return not last

    try:
        await wait_for(done, timeout, "consumer books to equal the truth", interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last[:5]}") from None


async def test_mid_flow_join_ends_equal_to_the_truth(redis_server) -> None:
    """A consumer that joins mid-flow loads hashes, follows streams, and ends exact."""
    async with rig(redis_server) as r:
        await asyncio.sleep(1.0)
        feed = MarketFeed(redis_server.url)
        assert await feed.connect()
        assert await feed.subscribe(r.tokens)
        assert feed.state is ConnectionState.SUBSCRIBED
        await asyncio.sleep(1.0)
        await converge(feed, r)
        assert feed.events > 0
        await feed.disconnect()


async def test_upstream_drop_disconnects_then_reconnects(redis_server) -> None:
    """A dropped exchange socket: on_disconnect, books suspect, then on_connect and exact."""
    async with rig(redis_server) as r:
        feed = MarketFeed(redis_server.url)
        seen: list[str] = []
        statuses: list[str] = []
        feed.on_connect = lambda: seen.append("connect")
        feed.on_disconnect = lambda: seen.append("disconnect")
        feed.on_status = lambda d: statuses.append(d["state"])
        await feed.connect()
        await feed.subscribe(r.tokens)
        await wait_for(lambda: all(feed.get_order_book(t).status == "synced" for t in r.tokens),
                       10, "synced books")
        r.sim.drop_all()
        await wait_for(lambda: "disconnect" in seen, 10, "on_disconnect")
        await wait_for(lambda: seen[-1] == "connect" and len(seen) >= 3, 10, "on_connect again")
        assert "disconnected" in statuses and "resubscribed" in statuses
        await converge(feed, r)
        await feed.disconnect()


async def test_redis_restart_disconnects_then_resyncs(redis_server) -> None:
    """Redis killed and restarted: on_disconnect, then on_connect once books are synced again."""
    async with rig(redis_server) as r:
        feed = MarketFeed(redis_server.url)
        seen: list[str] = []
        feed.on_connect = lambda: seen.append("connect")
        feed.on_disconnect = lambda: seen.append("disconnect")
        await feed.connect()
        await feed.subscribe(r.tokens)
        await wait_for(lambda: all(feed.get_order_book(t).status == "synced" for t in r.tokens),
                       10, "synced books")
        r.redis_server.restart()
        old, r.redis = r.redis, r.redis_server.client()
        await old.aclose()
        await wait_for(lambda: "disconnect" in seen, 10, "on_disconnect")
        await wait_for(lambda: seen[-1] == "connect" and len(seen) >= 3, 15, "on_connect again")
        await converge(feed, r)
        assert feed.reloads > 0 or feed.state is ConnectionState.SUBSCRIBED
        await feed.disconnect()


async def test_a_stream_trimmed_past_a_slow_consumer_is_reloaded(redis_server) -> None:
    """A consumer stuck in a callback while its stream is trimmed detects the gap and reloads."""
    async with rig(redis_server) as r:
        feed = MarketFeed(redis_server.url)
        stuck = asyncio.Event()
        release = asyncio.Event()

        async def slow(_: dict) -> None:
            if not stuck.is_set():
                stuck.set()
                await release.wait()

        feed.on_price_change = slow
        await feed.connect()
        await feed.subscribe(r.tokens)
        await asyncio.wait_for(stuck.wait(), 10)
        await asyncio.sleep(0.5)  # flow goes on while the consumer is stuck
        for token in r.tokens:
            await r.redis.xtrim(keys.stream(token), maxlen=0)
        await asyncio.sleep(0.3)  # entries after the trim, so the cursor is behind a gap
        release.set()
        await wait_for(lambda: feed.reloads > 0, 10, "a reload after the gap")
        await converge(feed, r)
        await feed.disconnect()


async def test_a_raising_callback_goes_to_on_error_and_the_loop_goes_on(redis_server) -> None:
    """An exception in a callback reaches on_error; later events are still delivered."""
    async with rig(redis_server) as r:
        feed = MarketFeed(redis_server.url)
        errors: list[Exception] = []
        calls = []

        def boom(data: dict) -> None:
            calls.append(data)
            raise ValueError("strategy bug")

        feed.on_price_change = boom
        feed.on_error = errors.append
        await feed.connect()
        await feed.subscribe(r.tokens)
        await wait_for(lambda: len(calls) >= 5, 10, "several price changes")
        assert len(errors) >= 5 and isinstance(errors[0], ValueError)
        await feed.disconnect()

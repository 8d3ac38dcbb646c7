"""MarketFeed against simulator + feeder + a private redis-server: books that are never wrong."""

from __future__ import annotations

import asyncio

from polybus.consumers import ConnectionState, MarketFeed
from polybus.wire import keys
from tests.consumers.helpers import feed_books_equal_truth
from tests.e2e.harness import rig
from tests.support import wait_for


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
        await wait_for(lambda: r.feeder.published > 500, 10, "the flow under way")
        feed = MarketFeed(redis_server.url)
        assert await feed.connect()
        assert await feed.subscribe(r.tokens)
        assert feed.state is ConnectionState.SUBSCRIBED
        await wait_for(lambda: feed.events > 300, 10, "300 entries followed")
        await converge(feed, r)
        assert feed.reloads == 0, "a clean join needs no reload"
        await feed.disconnect()


def all_synced(feed: MarketFeed, tokens: list[str]) -> bool:
    return all(feed.get_order_book(t).status == "synced" for t in tokens)


async def test_upstream_drop_disconnects_then_reconnects(redis_server) -> None:
    """A dropped exchange socket: on_disconnect with books suspect, then on_connect and exact."""
    async with rig(redis_server) as r:
        feed = MarketFeed(redis_server.url)
        seen: list[str] = []
        suspect_at_disconnect: list[bool] = []
        states: list[str] = []
        feed.on_connect = lambda: seen.append("connect")

        def on_disconnect() -> None:
            seen.append("disconnect")
            suspect_at_disconnect.append(
                any(feed.get_order_book(t).status == "suspect" for t in r.tokens)
            )

        feed.on_disconnect = on_disconnect
        feed.on_status = lambda d: states.append(d["state"])
        await feed.connect()
        await feed.subscribe(r.tokens)
        await wait_for(lambda: all_synced(feed, r.tokens), 10, "synced books")
        r.sim.drop_all()
        await wait_for(lambda: "disconnect" in seen, 10, "on_disconnect")
        assert suspect_at_disconnect == [True]
        await wait_for(lambda: seen[-1] == "connect" and len(seen) >= 3, 10, "on_connect again")
        assert seen == ["connect", "disconnect", "connect"]
        assert "disconnected" in states and "resubscribed" in states
        await converge(feed, r)
        await feed.disconnect()


async def test_redis_restart_disconnects_then_resyncs(redis_server) -> None:
    """Redis killed and restarted: on_disconnect while reconnecting, then on_connect once the
    feeder's fresh books arrive, and the books equal the truth."""
    async with rig(redis_server) as r:
        feed = MarketFeed(redis_server.url)
        seen: list[tuple[str, ConnectionState]] = []
        feed.on_connect = lambda: seen.append(("connect", feed.state))
        feed.on_disconnect = lambda: seen.append(("disconnect", feed.state))
        await feed.connect()
        await feed.subscribe(r.tokens)
        await wait_for(lambda: all_synced(feed, r.tokens), 10, "synced books")
        r.redis_server.restart()
        old, r.redis = r.redis, r.redis_server.client()
        await old.aclose()
        await wait_for(lambda: len(seen) >= 2, 10, "on_disconnect")
        assert seen[1] == ("disconnect", ConnectionState.RECONNECTING)
        await wait_for(lambda: len(seen) >= 3, 15, "on_connect again")
        assert seen[2] == ("connect", ConnectionState.SUBSCRIBED)
        await converge(feed, r)
        assert feed.reloads >= len(r.tokens)
        await feed.disconnect()


async def test_a_stream_trimmed_past_a_slow_consumer_is_reloaded(redis_server) -> None:
    """A consumer stuck in a callback while its streams are trimmed detects the gap and
    reloads; its books end equal to the truth."""
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
        before = r.feeder.published
        await wait_for(lambda: r.feeder.published > before + 200, 10, "the flow going on")
        for token in r.tokens:
            await r.redis.xtrim(keys.stream(token), maxlen=0)
        after = r.feeder.published
        await wait_for(lambda: r.feeder.published > after + 50, 10, "entries after the trim")
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

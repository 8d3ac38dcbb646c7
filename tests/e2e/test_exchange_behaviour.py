"""The feed against the exchange as it really behaves (PROTOCOL.md §9), one behaviour per test:
a scripted exchange on real sockets, the feeder, a private redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.wire import keys
from tests.e2e.harness import FAST, levels_of
from tests.e2e.scripted import Client, Scripted, book, change, pc_frame
from tests.support import RedisServer, wait_for


Y, N, L = "7001", "7002", "7003"
"""A binary market's YES and NO legs, and a token that a socket will silently lose."""


@contextlib.asynccontextmanager
async def feed(
    redis_server: RedisServer, tokens: list[str], ex: Scripted | None = None, **options: Any
) -> AsyncIterator[tuple[Scripted, Feeder, aioredis.Redis]]:
    ex = ex or Scripted()
    await ex.start()
    config = FeederConfig(
        tokens=tuple(tokens),
        ws_url=ex.ws_url,
        clob_url=ex.rest_url,
        redis_url=redis_server.url,
        feeder_id="test",
        **{
            **FAST,
            "silence_timeout": 30.0,  # a script is quiet
            **options,
        },
    )  # type: ignore[arg-type]
    app = Feeder(config)
    task = asyncio.create_task(app.run())
    redis = redis_server.client()
    try:
        yield ex, app, redis
        assert not task.done(), f"the feeder stopped: {task.result() if task.done() else ''}"
    finally:
        app.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await ex.stop()
        await redis.aclose()


async def entries(redis: aioredis.Redis, token: str) -> list[dict[str, str]]:
    return [fields for _, fields in await redis.xrange(keys.stream(token))]


async def statuses(redis: aioredis.Redis, token: str) -> list[tuple[str, str]]:
    return [(f["state"], f["reason"]) for f in await entries(redis, token) if f["type"] == "status"]


async def status_of(redis: aioredis.Redis, token: str) -> str | None:
    value: str | None = await redis.hget(keys.book(token), "status")
    return value


async def synced(redis: aioredis.Redis, *tokens: str) -> bool:
    return all([await status_of(redis, t) == "synced" for t in tokens])


# --- a market as hand-written live frames ---------------------------------------------------
YES_BIDS = [("0.31", "100"), ("0.30", "50"), ("0.29", "200")]
YES_ASKS = [("0.33", "100"), ("0.34", "100")]
NO_BIDS = [("0.67", "100"), ("0.66", "100")]
NO_ASKS = [("0.69", "100"), ("0.70", "50"), ("0.71", "200")]


def initial(tokens: list[str]) -> list[dict[str, Any]]:
    books = {
        Y: book(Y, "1000", YES_BIDS, YES_ASKS),
        N: book(N, "1000", NO_BIDS, NO_ASKS),
        L: book(L, "1000", [("0.50", "10")], [("0.52", "10")]),
    }
    return [books[t] for t in tokens if t in books]


def answer_initial(ex: Scripted, client: Client, msg: dict[str, Any]) -> list[bytes | str]:
    return [orjson.dumps(initial(msg["assets_ids"]))]


def sweep(
    y_top: tuple[str, str] = ("0.29", "0.30"), n_top: tuple[str, str] = ("0.70", "0.71")
) -> list[dict[str, Any]]:
    """A taker sells 180 YES limit 0.30: it sweeps the bids at 0.31 and 0.30 and rests 30 at
    0.30. As live: every frame of the sweep has one timestamp and states the post-sweep top,
    while the matched levels are removed one and two frames later (the book folded so far is
    crossed); then both legs' post-trade books, then the trade, 35 ms later."""
    ts = "2000"
    frames: list[dict[str, Any]] = [
        pc_frame(
            ts, change(N, "BUY", "0.70", "30", *n_top), change(Y, "SELL", "0.30", "30", *y_top)
        ),
        pc_frame(ts, change(Y, "BUY", "0.31", "0", *y_top), change(N, "SELL", "0.69", "0", *n_top)),
        pc_frame(ts, change(Y, "BUY", "0.30", "0", *y_top), change(N, "SELL", "0.70", "0", *n_top)),
    ]
    return frames


POST_SWEEP_YES = ([("0.29", "200")], [("0.30", "30"), ("0.33", "100"), ("0.34", "100")])


async def test_a_sweep_whose_stated_top_leads_its_removals_raises_no_alarm(redis_server) -> None:
    """The live sweep pattern (stated top first, removals after, one timestamp) produces no
    `suspect` status and no resubscribe, and the book ends exactly as the exchange's."""
    ex = Scripted()
    ex.on_subscribe = answer_initial
    async with feed(redis_server, [Y, N], ex) as (ex, app, redis):
        await wait_for(lambda: synced(redis, Y, N), 10, "both books synced")
        client = ex.clients[0]
        await client.send(*sweep())
        await client.send(
            book(Y, "2000", POST_SWEEP_YES[0], POST_SWEEP_YES[1], "2" * 40, initial=False)
        )
        trade = {
            "market": "0x" + "a" * 64,
            "asset_id": Y,
            "price": "0.31",
            "size": "100",
            "fee_rate_bps": "0",
            "side": "SELL",
            "timestamp": "2035",
            "event_type": "last_trade_price",
            "transaction_hash": "0x" + "b" * 64,
        }
        await client.send(trade)
        await wait_for(lambda: app.published >= 2 + 2 + 6 + 1 + 1, 10, "all published")
        await wait_for(lambda: app.mirror.pending == 0, 5, "every run checked")
        assert app.mirror.mismatches == 0
        assert ex.ops("unsubscribe") == []
        assert await statuses(redis, Y) == [("connected", "epoch 1")]
        assert await statuses(redis, N) == [("connected", "epoch 1")]
        hashed = await redis.hgetall(keys.book(Y))
        assert levels_of(hashed) == (
            [("0.29", "200")],
            [("0.3", "30"), ("0.33", "100"), ("0.34", "100")],
        )
        assert (hashed["best_bid"], hashed["best_ask"], hashed["status"]) == (
            "0.29",
            "0.3",
            "synced",
        )


async def test_a_persistently_wrong_stated_top_is_resynced_within_a_second(redis_server) -> None:
    """A top the exchange states and its own later frames never fix is a real mismatch: the
    token turns suspect and is resubscribed (unsubscribe first) within a second."""
    ex = Scripted()
    ex.on_subscribe = answer_initial
    async with feed(redis_server, [Y, N], ex) as (ex, _app, redis):
        await wait_for(lambda: synced(redis, Y, N), 10, "both books synced")
        await ex.clients[0].send(*sweep(y_top=("0.28", "0.30")))
        start = asyncio.get_running_loop().time()
        await wait_for(
            lambda: _has_status(redis, Y, ("suspect", "bbo_mismatch")),
            2,
            "a bbo_mismatch suspect status",
        )
        assert asyncio.get_running_loop().time() - start < 1.0
        await wait_for(lambda: [Y] in ex.ops("unsubscribe"), 2, "an unsubscribe of Y")
        assert ("suspect", "bbo_mismatch") not in await statuses(redis, N)
        # the resubscribe is answered with a fresh book: synced again
        await wait_for(lambda: synced(redis, Y), 5, "Y synced again")


async def _has_status(redis: aioredis.Redis, token: str, status: tuple[str, str]) -> bool:
    return status in await statuses(redis, token)


async def test_an_identical_resync_snapshot_still_ends_synced(redis_server) -> None:
    """A snapshot asked for by a resync is used even when it is byte-identical to the last
    one (the duplicate filter must not swallow it)."""
    frame = orjson.dumps([book(Y, "1000", YES_BIDS, YES_ASKS)])
    ex = Scripted()
    ex.on_subscribe = lambda s, c, m: [frame]
    async with feed(redis_server, [Y], ex) as (ex, app, redis):
        await wait_for(lambda: synced(redis, Y), 10, "Y synced")
        app._resync([Y], "test")
        await wait_for(lambda: _has_status(redis, Y, ("suspect", "test")), 5, "suspect")
        await wait_for(lambda: synced(redis, Y), 5, "Y synced by the identical snapshot")
        assert ex.ops("unsubscribe") == [[Y]]
        kinds = [(f["type"], f.get("source", "")) for f in await entries(redis, Y)]
        assert kinds.count(("book", "ws")) == 2


async def test_text_replies_and_frame_order(redis_server) -> None:
    """`NO NEW ASSETS` is filtered and counted like PONG and never feeds the data-silence
    deadline; no PING ever precedes the subscription (the exchange closes 1008 on that)."""
    ex = Scripted()
    ex.on_subscribe = answer_initial
    async with feed(redis_server, [Y], ex, silence_timeout=2.0) as (ex, app, redis):
        await wait_for(lambda: synced(redis, Y), 10, "Y synced")
        client = ex.clients[0]
        loop = asyncio.get_running_loop()
        start = loop.time()
        while len(ex.clients) == 1 and loop.time() - start < 6:
            with contextlib.suppress(Exception):
                await client.ws.send("NO NEW ASSETS")
            await asyncio.sleep(0.2)
        assert len(ex.clients) >= 2, "NO NEW ASSETS kept a data-silent socket alive"
        assert 1.5 < loop.time() - start < 5.0
        assert app.counts["filtered.no_new_assets"] >= 5
        assert app.counts.get("quarantine.malformed_json", 0) == 0
        await wait_for(lambda: synced(redis, Y), 10, "Y synced on the new socket")
        assert ex.pinged_early == 0
        for c in ex.clients:
            assert c.received and c.received[0].startswith('{"type":"market"')


async def test_accept_then_close_is_a_reconnect_not_an_exit(redis_server) -> None:
    """Handshakes that the server closes at once are retried; the feeder never exits."""
    ex = Scripted()
    ex.on_subscribe = answer_initial
    ex.close_after_accept = 4
    async with feed(redis_server, [Y], ex, reconnect_attempts=0) as (ex, _app, redis):
        await wait_for(lambda: synced(redis, Y), 15, "Y synced after the closed handshakes")
        assert ex.close_after_accept == 0


async def test_a_rest_snapshot_older_than_folded_deltas_does_not_roll_back(redis_server) -> None:
    """A REST book stamped before deltas the socket already delivered is dropped (the hash
    keeps the delta); a newer one is published with source=rest and syncs the book."""
    ex = Scripted()
    ex.on_subscribe = lambda s, c, m: (
        [orjson.dumps(initial(m["assets_ids"]))] if m.get("type") else []
    )  # resubscribes go unanswered
    ex.rest_books[Y] = book(Y, "1500", [("0.10", "1")], [("0.90", "1")])
    async with feed(redis_server, [Y], ex, snapshot_timeout=1.0) as (ex, app, redis):
        await wait_for(lambda: synced(redis, Y), 10, "Y synced")
        await ex.clients[0].send(pc_frame("3000", change(Y, "BUY", "0.32", "7", "0.32", "0.33")))
        await wait_for(lambda: _level(redis, Y, "bid:0.32"), 5, "the delta folded in")
        app._resync([Y], "test")  # the socket will not answer: the ladder reaches REST
        await wait_for(lambda: len(ex.rest_requests) >= 1, 5, "a REST request")
        await wait_for(lambda: app.ladder_counts().get("rest.stale", 0) >= 1, 5, "stale REST")
        assert await redis.hget(keys.book(Y), "bid:0.32") == "7"
        assert await status_of(redis, Y) == "suspect"
        ex.rest_books[Y] = book(Y, "4000", [("0.20", "1")], [("0.80", "1")])
        app._resync([Y], "again")
        await wait_for(lambda: synced(redis, Y), 8, "Y synced by a fresh REST book")
        hashed = await redis.hgetall(keys.book(Y))
        assert levels_of(hashed) == ([("0.2", "1")], [("0.8", "1")])
        sources = [f["source"] for f in await entries(redis, Y) if f["type"] == "book"]
        assert sources[-1] == "rest"


async def _level(redis: aioredis.Redis, token: str, field: str) -> bool:
    return bool(await redis.hexists(keys.book(token), field))


async def test_a_silently_lost_token_is_rescued_by_the_ladder(redis_server) -> None:
    """A token the first socket never delivers (REST still answers) is synced by REST, then
    moved to a fresh socket that delivers it — within 3 × WS_SNAPSHOT_TIMEOUT — while its
    neighbours on the first socket never leave `synced`."""
    timeout = 1.5

    def answer(ex: Scripted, client: Client, msg: dict[str, Any]) -> list[bytes | str]:
        first = client is ex.clients[0]
        wanted = [t for t in msg["assets_ids"] if not (first and t == L)]
        return [orjson.dumps(initial(wanted))] if wanted else []

    ex = Scripted()
    ex.on_subscribe = answer
    ex.rest_books[L] = book(L, "1000", [("0.50", "10")], [("0.52", "10")])
    async with feed(redis_server, [Y, N, L], ex, snapshot_timeout=timeout) as (ex, app, redis):
        start = asyncio.get_running_loop().time()
        await wait_for(lambda: synced(redis, Y, N), 10, "the neighbours synced")
        await wait_for(
            lambda: len(ex.clients) >= 2 and L in ex.clients[1].subscribed,
            timeout * 3 + 2,
            "L moved to a fresh socket",
        )
        await wait_for(
            lambda: _adopted_from_ws(app, redis),
            timeout * 3 + 2,
            "L adopted by the fresh socket",
        )
        assert asyncio.get_running_loop().time() - start < timeout * 3 + 1.5
        kinds = [(f["type"], f.get("source", "")) for f in await entries(redis, L)]
        assert ("book", "rest") in kinds and kinds[-1] == ("book", "ws")
        for token in (Y, N):
            assert await statuses(redis, token) == [("connected", "epoch 1")]
        counts = app.ladder_counts()
        assert counts["ladder.resubscribe"] >= 1 and counts["ladder.rest"] >= 1
        assert counts["ladder.move"] >= 1 and counts["adopted"] >= 1


async def _adopted_from_ws(app: Feeder, redis: aioredis.Redis) -> bool:
    """The fresh socket owns L and its book is the newest entry (rung 1 also unsubscribes L,
    so an unsubscribe alone proves nothing)."""
    if app.ladder_counts().get("adopted", 0) < 1 or not await synced(redis, L):
        return False
    last = await redis.xrevrange(keys.stream(L), count=1)
    return bool(last) and last[0][1].get("type") == "book" and last[0][1].get("source") == "ws"

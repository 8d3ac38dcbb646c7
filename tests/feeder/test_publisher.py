"""The publisher: one atomic Lua step per token folds stream entries into the book hash."""

from __future__ import annotations

import fakeredis
import pytest

from polybus.feeder.outbox import Batch, Outbox
from polybus.feeder.publisher import Publisher
from polybus.wire import keys
from polybus.wire.codec import decode
from polybus.wire.events import Book, MarketEvent, PriceChange, Status, TickSizeChange, Trade


T = "70431576231964937843803106892715746780871139131450600661571484047788631532544"
U = "95360841637169588127682974065479463901706979127607889470280694904432390648586"


def snapshot(token: str = T) -> Book:
    return Book(
        token,
        "0xm",
        "100",
        (("0.47", "310.5"), ("0.46", "850")),
        (("0.49", "275.25"), ("0.51", "640")),
        "h0",
        tick_size="0.01",
        last_trade_price="0.48",
    )


def batch_of(*events, epoch: int = 1, rx: int = 7) -> Batch:
    batch = Batch()
    for event in events:
        batch.add(event, epoch, rx)
    return batch


@pytest.fixture
def redis():
    return fakeredis.FakeAsyncRedis(decode_responses=True)


async def test_book_then_deltas_fold_into_the_hash(redis) -> None:
    """A book, deltas, a trade and a tick change leave exactly the expected hash."""
    pub = Publisher(redis)
    broken = await pub.write(
        batch_of(
            snapshot(),
            PriceChange(T, "101", "bid", "0.48", "150", "0.48", "0.49", "h1"),
            PriceChange(T, "102", "ask", "0.49", "0", "0.48", "0.51", "h2"),
            Trade(T, "103", "0.51", "100", "BUY", "0", "0xt"),
            TickSizeChange(T, "104", "0.01", "0.001"),
        )
    )
    book = await redis.hgetall(keys.book(T))
    entries = await redis.xrange(keys.stream(T))
    assert broken == []
    assert book == {
        "asset_id": T,
        "market": "0xm",
        "hash": "h2",
        "ts": "102",
        "status": "synced",
        "bid:0.47": "310.5",
        "bid:0.46": "850",
        "bid:0.48": "150",
        "ask:0.51": "640",
        "best_bid": "0.48",
        "best_ask": "0.51",
        "tick_size": "0.001",
        "last_trade_price": "0.51",
        "last_trade_size": "100",
        "last_trade_side": "BUY",
        "last_id": entries[-1][0],
        "seq": "5",
        "epoch": "1",
    }
    assert [int(f["seq"]) for _, f in entries] == [1, 2, 3, 4, 5]
    assert decode(entries[0][1], T).event == snapshot()


async def test_a_new_book_replaces_every_level(redis) -> None:
    """After a second snapshot no level of the first survives."""
    pub = Publisher(redis)
    await pub.write(batch_of(snapshot()))
    await pub.write(batch_of(Book(T, "0xm", "200", (("0.3", "1"),), (), "h9")))
    book = await redis.hgetall(keys.book(T))
    assert sorted(k for k in book if k[:4] in ("bid:", "ask:")) == ["bid:0.3"]
    assert (book["best_bid"], book["best_ask"]) == ("0.3", "")
    assert book["last_trade_price"] == "0.48", "a post-trade book keeps the cached last trade"


async def test_status_marks_suspect_until_the_next_snapshot(redis) -> None:
    """disconnected turns the book suspect; resubscribed keeps it so; a book makes it synced."""
    pub = Publisher(redis)
    await pub.write(batch_of(Status(T, "connected", "")))
    assert await redis.hget(keys.book(T), "status") == "pending"
    await pub.write(batch_of(snapshot()))
    assert await redis.hget(keys.book(T), "status") == "synced"
    await pub.write(batch_of(Status(T, "disconnected", "closed:1006")))
    assert await redis.hget(keys.book(T), "status") == "suspect"
    await pub.write(batch_of(Status(T, "resubscribed", "epoch 2"), epoch=2))
    assert await redis.hget(keys.book(T), "status") == "suspect"
    await pub.write(batch_of(snapshot(), epoch=2))
    assert await redis.hmget(keys.book(T), ["status", "epoch", "seq"]) == ["synced", "2", "5"]


async def test_seq_is_contiguous_per_token_across_batches(redis) -> None:
    """seq counts entries per token, across batches and interleaved tokens."""
    pub = Publisher(redis)
    for i in range(3):
        await pub.write(batch_of(snapshot(T), snapshot(U), Status(T, "suspect", str(i))))
    for token, n in ((T, 6), (U, 3)):
        seqs = [int(f["seq"]) for _, f in await redis.xrange(keys.stream(token))]
        assert seqs == list(range(1, n + 1))


async def test_quarantine_and_lifecycle_go_to_their_streams_once(redis) -> None:
    """Quarantined frames keep raw and reason; a lifecycle event seen twice is written once."""
    outbox = Outbox()
    outbox.quarantine("{not json", "malformed_json", 5)
    event = MarketEvent("new_market", "0xc", "1", (T, U), "9", question="Q?")
    assert outbox.market(event, 5) is True
    assert outbox.market(event, 6) is False
    await Publisher(redis).write(outbox.take_nowait())
    [(_, q)] = await redis.xrange(keys.quarantine())
    assert q == {"raw": "{not json", "reason": "malformed_json", "rx": "5"}
    markets = await redis.xrange(keys.markets())
    assert len(markets) == 1 and markets[0][1]["question"] == "Q?"


async def test_streams_are_capped_approximately(redis) -> None:
    """MAXLEN ~ keeps a token's stream near the configured length."""
    pub = Publisher(redis, maxlen=50)
    for _ in range(20):
        await pub.write(batch_of(*[Status(T, "suspect", str(i)) for i in range(50)]))
    length = await redis.xlen(keys.stream(T))
    assert 50 <= length < 1000
    assert await redis.hget(keys.book(T), "seq") == "1000"


async def test_real_redis_restart_raises_then_recovers(redis_server) -> None:
    """On a real server: a lost script cache is reloaded; a dead server raises BackendError."""
    from polybus.wire.errors import BackendError

    client = redis_server.client()
    pub = Publisher(client)
    await pub.write(batch_of(snapshot()))
    await client.script_flush()
    await pub.write(batch_of(Status(T, "suspect", "x")))
    assert await client.hget(keys.book(T), "seq") == "2"
    redis_server.kill()
    with pytest.raises(BackendError):
        await pub.write(batch_of(Status(T, "suspect", "y")))
    redis_server.start()
    await pub.write(batch_of(snapshot()))
    assert await client.hmget(keys.book(T), ["seq", "status"]) == ["1", "synced"]
    await client.aclose()


async def test_lost_redis_state_is_reported_per_token(redis) -> None:
    """When the hash's seq is not the one last written (restart, flush), the token is reported."""
    pub = Publisher(redis)
    assert await pub.write(batch_of(snapshot(T), snapshot(U))) == []
    await redis.flushall()
    assert await pub.write(batch_of(Status(T, "suspect", "x"))) == [T]
    assert await pub.write(batch_of(Status(T, "suspect", "y"))) == []
    fresh = Publisher(redis)
    assert await fresh.write(batch_of(snapshot(U))) == [], "a new feeder does not know, so no check"


async def test_a_value_holding_separators_is_written_verbatim(redis) -> None:
    """Values reach the stream exactly, whatever bytes they hold: items are arguments of
    their own, never packed into one string to be split."""
    await Publisher(redis).write(batch_of(Status(T, "suspect", "a\x1fb c\x00d\n")))
    [(_, fields)] = await redis.xrange(keys.stream(T))
    assert fields["reason"] == "a\x1fb c\x00d\n"
    assert fields["state"] == "suspect"


async def test_outbox_discards_while_redis_is_down() -> None:
    """In discarding mode a full outbox never blocks a producer; drops are counted."""
    import asyncio

    outbox = Outbox(capacity=1)
    outbox.discarding = True
    event = snapshot()
    await asyncio.wait_for(outbox.put([event, event, event], 1, 1), 1)
    outbox.put_nowait([Status(T, "disconnected", "x")], 1, 1)
    assert (len(outbox), outbox.discarded) == (0, 4)
    outbox.discarding = False
    await outbox.put([event], 1, 1)
    assert len(outbox) == 1


async def test_a_new_subscription_distrusts_a_book_synced_before(redis) -> None:
    """A successor feeder's `connected` turns a book synced under a dead one suspect."""
    pub = Publisher(redis)
    await pub.write(batch_of(snapshot()))
    await Publisher(redis).write(batch_of(Status(T, "connected", "epoch 1"), epoch=1))
    assert await redis.hget(keys.book(T), "status") == "suspect"


async def test_the_exchanges_best_bid_ask_never_overwrites_the_hash_top(redis) -> None:
    """A `best_bid_ask` entry is streamed but the hash keeps the top folded from its levels."""
    from polybus.wire.events import BestBidAsk

    pub = Publisher(redis)
    await pub.write(batch_of(snapshot(), BestBidAsk(T, "101", "0.40", "0.60", "0.2")))
    book = await redis.hgetall(keys.book(T))
    assert (book["best_bid"], book["best_ask"]) == ("0.47", "0.49")
    assert len(await redis.xrange(keys.stream(T))) == 2


async def test_a_value_orjson_cannot_encode_is_replaced_not_fatal(redis) -> None:
    """A value holding a lone surrogate (never from a parsed frame) is written with it
    replaced; the batch and its other fields are not lost."""
    await Publisher(redis).write(batch_of(Status(T, "suspect", "bad\ud800end")))
    [(_, fields)] = await redis.xrange(keys.stream(T))
    assert fields["reason"] == "bad?end"
    assert fields["state"] == "suspect"


async def test_one_server_takes_a_batchs_steps_in_few_script_calls(redis_server) -> None:
    """On one redis-server, 300 tokens of 10 entries go in two script calls of at most
    CALL_ENTRIES entries, and every token's stream, seq and hash are as if written alone."""
    from polybus.feeder.publisher import CALL_ENTRIES

    client = redis_server.client()
    tokens = [str(10**20 + i) for i in range(300)]
    pub = Publisher(client)
    await pub.write(batch_of(*(snapshot(t) for t in tokens)))
    await client.config_resetstat()
    changes = [
        PriceChange(t, str(200 + i), "bid", "0.4", str(i + 1), "", "", f"h{i}")
        for i in range(10)
        for t in tokens
    ]
    assert await pub.write(batch_of(*changes)) == []
    calls = (await client.info("commandstats"))["cmdstat_evalsha"]["calls"]
    assert calls == -(-len(changes) // CALL_ENTRIES) == 2
    for t in tokens[::37]:
        book = await client.hgetall(keys.book(t))
        assert (book["seq"], book["bid:0.4"], book["hash"], book["status"]) == (
            "11", "10", "h9", "synced"
        )  # fmt: skip
        assert await client.xlen(keys.stream(t)) == 11
    await client.aclose()


def test_calls_group_steps_in_order_within_the_limit() -> None:
    """calls() keeps the steps' order, fills each call up to the limit, and gives a step
    larger than the limit a call of its own."""
    from polybus.feeder.publisher import Step, calls

    steps = [Step(str(i), [("type", "x")] * n, None, []) for i, n in enumerate([3, 4, 9, 1, 2])]
    groups = calls(steps, limit=5)
    assert [[s.token for s in g] for g in groups] == [["0"], ["1"], ["2"], ["3", "4"]]


async def test_price_changes_sent_as_values_write_what_full_entries_write(
    redis_server, monkeypatch
) -> None:
    """A price change sent as its values alone leaves the same stream entries (fields and
    their order) and the same hash as the same events sent as full field/value items."""
    from polybus.feeder import publisher as module

    events = [
        snapshot(T),
        PriceChange(T, "101", "bid", "0.48", "150", "0.48", "0.49", "h1"),
        Trade(T, "102", "0.49", "5", "BUY", "0", "0xt"),
        PriceChange(T, "103", "ask", "0.49", "0", "0.48", "0.51", "h2"),
        Status(T, "suspect", "x"),
        PriceChange(T, "104", "bid", "0.46", "0", "0.48", "0.51", "h3"),
    ]
    from polybus.wire.codec import encode_items

    sent = module._compact(encode_items(events[1], epoch=1, rx=7))
    assert sent[0] == "price_change" and len(sent) == 11  # values alone: the path under test
    client = redis_server.client()
    seen = []
    for compact in (True, False):
        await client.flushall()
        if not compact:
            monkeypatch.setattr(module, "_compact", lambda items: items)
        pub = Publisher(client, writer="w1")
        await pub.write(batch_of(*events[:3]))
        await pub.write(batch_of(*events[3:]))
        entries = [list(f.items()) for _, f in await client.xrange(keys.stream(T))]
        book = await client.hgetall(keys.book(T))
        book.pop("last_id")
        seen.append((entries, book))
    assert seen[0] == seen[1]
    assert [e[0] for e in seen[0][0]] == [("type", e.type) for e in events]
    await client.aclose()

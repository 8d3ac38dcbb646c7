"""The status rules cannot drift: the feeder's Lua step on a real redis-server and the consumer's
fold are driven through every row of wire/status_rules.py and must both land on its result."""

from __future__ import annotations

import pytest

from polybus.consumers.books import TokenBook
from polybus.feeder.outbox import Batch
from polybus.feeder.publisher import LUA, Publisher, render
from polybus.wire import keys, status_rules
from polybus.wire.codec import decode
from polybus.wire.events import (
    BOOK_STATUSES,
    BestBidAsk,
    Book,
    Event,
    PriceChange,
    Status,
    TickSizeChange,
    Trade,
)


def event_of(kind: str, token: str) -> Event:
    """One entry of the table's `kind` for `token`."""
    if kind.startswith("status:"):
        state = kind.removeprefix("status:")
        return Status(token, state, "drift-test", ttl_ms="60000" if state == "retired" else "")
    return {
        "book": Book(token, "0xm", "200", (("0.47", "10"),), (("0.49", "5"),), "h2"),
        "price_change": PriceChange(token, "201", "bid", "0.46", "3", "0.47", "0.49", "h3"),
        "trade": Trade(token, "202", "0.49", "5", "BUY", "0", "0xt"),
        "tick_size_change": TickSizeChange(token, "203", "0.01", "0.001"),
        "best_bid_ask": BestBidAsk(token, "204", "0.47", "0.49", "0.02"),
    }[kind]


async def write(pub: Publisher, event: Event) -> None:
    batch = Batch()
    batch.add(event, 1, 7)
    assert await pub.write(batch) == []


async def test_lua_step_and_consumer_fold_follow_every_row(redis_server) -> None:
    """Every (entry kind, status before) row: the hash's status after the Lua step and the
    consumer's wire_status after its fold both equal the table's."""
    redis = redis_server.client()
    pub = Publisher(redis)
    drift: list[str] = []
    for n, ((kind, before), want) in enumerate(sorted(status_rules.RULES.items())):
        token = str(1000 + n)
        book_key = keys.book(token)
        await write(pub, event_of("book", token))  # a real hash: levels, seq and last_id
        await redis.hset(book_key, "status", before)
        local = TokenBook(token)
        local.load(await redis.hgetall(book_key))
        assert local.wire_status == before
        await write(pub, event_of(kind, token))
        lua = await redis.hget(book_key, "status")
        [(entry_id, fields)] = await redis.xrevrange(keys.stream(token), count=1)
        local.apply(decode(fields, token, entry_id))
        if (lua, local.wire_status) != (want, want):
            drift.append(
                f"{kind} from {before}: table {want}, lua {lua}, consumer {local.wire_status}"
            )
    assert not drift, "\n".join(drift)
    assert len(status_rules.RULES) == len(status_rules.KINDS) * len(BOOK_STATUSES)
    await redis.aclose()


async def test_lua_reads_a_status_it_does_not_know_as_the_table_says(redis_server) -> None:
    """A hash status outside BOOK_STATUSES (someone else wrote it) folds in the Lua step as
    `after()` reads it: as UNKNOWN_READS_AS; a missing hash folds from pending."""
    redis = redis_server.client()
    pub = Publisher(redis)
    drift: list[str] = []
    for n, kind in enumerate(status_rules.KINDS):
        garbled, fresh = str(2000 + n), str(3000 + n)
        await redis.hset(keys.book(garbled), "status", "weird")
        await write(pub, event_of(kind, garbled))
        await write(pub, event_of(kind, fresh))
        got = (
            await redis.hget(keys.book(garbled), "status"),
            await redis.hget(keys.book(fresh), "status"),
        )
        want = (status_rules.after(kind, "weird"), status_rules.after(kind, "pending"))
        if got != want:
            drift.append(f"{kind}: table {want}, lua {got}")
    assert not drift, "\n".join(drift)
    await redis.aclose()


def test_the_script_carries_the_rendered_table_and_nothing_unrendered() -> None:
    """publisher.LUA holds wire's status positions verbatim and no marker; a script without
    the markers is refused rather than loaded without rules."""
    assert status_rules.lua_positions(1) in LUA and "@" not in LUA
    with pytest.raises(ValueError, match="STATUS_POSITIONS"):
        render("return 1")

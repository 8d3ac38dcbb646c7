"""Hostile frames against a live feeder: each costs only its own quarantine — the socket stays
up and every other token stays synced (issue 11's short killer frames)."""

from __future__ import annotations

import orjson

from polybus.wire import keys
from tests.e2e.scripted import Scripted, change, pc_frame
from tests.e2e.test_exchange_behaviour import N, Y, answer_initial, entries, feed, synced
from tests.support import wait_for


def killers() -> list[bytes]:
    """Short frames that once raised out of the normalizer or published invalid data."""
    deep = "[" * 600 + "]" * 600
    return [
        orjson.dumps(pc_frame("3000", change(Y, "BUY", "1e999999999", "5", "0.31", "0.33"))),
        orjson.dumps(pc_frame("3000", change(Y, "BUY", "1e100", "5", "0.31", "0.33"))),
        orjson.dumps(pc_frame("3000", change(Y, "BUY", "0.31", "1e999999", "0.31", "0.33"))),
        orjson.dumps(pc_frame("3000", change(Y, "BUY", "7", "-5", "0.31", "0.33"))),
        orjson.dumps(pc_frame("3000", change(Y, "BUY", "١٢", "1_000", "0.31", "0.33"))),
        f'{{"event_type":"book","asset_id":"{Y}","bids":{deep},"asks":[]}}'.encode(),
        b'{"event_type":"price_change","price_changes":' + deep.encode() + b"}",
        b"\xff\xfe not utf-8",
    ]


async def test_killer_frames_cost_only_their_quarantine(redis_server) -> None:
    """Every killer frame is quarantined; the socket is never dropped, Y keeps its book and
    a valid delta of N right after them is published."""
    ex = Scripted()
    ex.on_subscribe = answer_initial
    async with feed(redis_server, [Y, N], ex) as (ex, app, redis):
        await wait_for(lambda: synced(redis, Y, N), 10, "both books synced")
        client = ex.clients[0]
        frames = killers()
        for frame in frames:
            # not UTF-8: only a binary frame can carry it; the rest are text, as live
            await client.ws.send(frame if frame.startswith(b"\xff") else frame.decode())
        await client.send(pc_frame("3001", change(N, "BUY", "0.68", "9", "0.68", "0.69")))
        await wait_for(lambda: _has_level(redis, N, "bid:0.68"), 10, "N's delta published")
        assert len(ex.clients) == 1 and app.connections[0].stats.reconnects == 0
        assert await synced(redis, Y, N)
        quarantined = await redis.xlen(keys.quarantine())
        assert quarantined >= len(frames) - 1
        published = [f for f in await entries(redis, Y) if f["type"] == "price_change"]
        assert published == []  # nothing from the killers reached Y's stream
        hashed = await redis.hgetall(keys.book(Y))
        assert not [k for k in hashed if k.startswith(("bid:", "ask:")) and len(k) > 12]


async def _has_level(redis, token: str, field: str) -> bool:
    return bool(await redis.hexists(keys.book(token), field))

"""The exchange's rules of PROTOCOL.md §9 on the wire: NO NEW ASSETS, 1008 on an early PING,
accept-then-close, silent per-connection loss with REST still answering, late trades."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from polybus.simulator import SimConfig, Simulator
from tests.simulator.client import Client, http
from tests.support import wait_for


@pytest.fixture
async def quiet() -> AsyncIterator[Simulator]:
    """A started simulator with its flow paused: tests drive `engine.step` themselves."""
    sim = Simulator(SimConfig(markets=4, seed=6, rate=100.0))
    await sim.start()
    await sim.pause()
    try:
        yield sim
    finally:
        await sim.stop()


def named(obj: dict[str, Any]) -> set[str]:
    """Every asset id an object talks about."""
    changes = obj.get("price_changes")
    if isinstance(changes, list):
        return {c["asset_id"] for c in changes}
    return {str(obj["asset_id"])} if "asset_id" in obj else set()


async def test_ping_before_subscribing_is_closed_with_1008(quiet: Simulator) -> None:
    """A text PING as the first message gets the socket closed: 1008, invalid payload."""
    async with connect(quiet.ws_url) as ws:
        await ws.send("PING")
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "invalid subscription payload")
    assert quiet.stats.early_pings == 1


async def test_ping_after_subscribing_and_early_ping_ok(quiet: Simulator) -> None:
    """After the subscription PING gets PONG; `early_ping_ok` also answers an early one."""
    client = await Client.open(quiet.ws_url, [])
    await client.barrier()
    quiet.faults.early_ping_ok = True
    async with connect(quiet.ws_url) as ws:
        await ws.send("PING")
        assert await asyncio.wait_for(ws.recv(), 10) == "PONG"
    assert quiet.stats.early_pings == 0
    await client.close()


async def test_close_after_accept(quiet: Simulator) -> None:
    """The next N handshakes complete and are closed at once (close frame, or abruptly with
    code None); the one after that is a normal connection."""
    quiet.close_after_accept(1)
    async with connect(quiet.ws_url) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1000
    quiet.close_after_accept(1, code=None)
    async with connect(quiet.ws_url) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1006
    client = await Client.open(quiet.ws_url, quiet.engine.tokens()[:1])
    await client.barrier()
    assert json.loads(client.texts[0])[0]["event_type"] == "book"
    assert quiet.stats.closed_at_accept == 2 and len(quiet.connections) == 1
    await client.close()


async def test_silent_loss_keeps_neighbours_and_rest(quiet: Simulator) -> None:
    """Lost tokens get no book and no element on that socket, even after unsubscribe and
    subscribe; neighbours flow and stay true; REST /books answers the truth with the
    exchange's hash and timestamp; a new connection gets them again."""
    tokens = quiet.engine.tokens()
    lost = [tokens[0], tokens[2], tokens[3]]  # one leg of a market, both legs of another
    quiet.lose_on_next_connection(lost)
    client = await Client.open(quiet.ws_url, tokens)
    await client.barrier()
    assert {b["asset_id"] for b in json.loads(client.texts[0])} == set(tokens) - set(lost)
    assert quiet.connections[0].subscribed == set(tokens)
    quiet.engine.step(600)
    for op in ("unsubscribe", "subscribe"):
        await client.ws.send(json.dumps({"operation": op, "assets_ids": lost}))
    quiet.engine.step(600)
    await client.barrier()
    assert not set(lost) & {t for o in client.objects for t in named(o)}
    assert client.texts.count("[]") == 0 and client.of_type("price_change")
    for token in set(tokens) - set(lost):
        assert client.refs.levels(token) == quiet.engine.true_book(token)
    status, books = await http(f"{quiet.http_url}/books", [{"token_id": t} for t in lost])
    assert status == 200 and [b["asset_id"] for b in books] == lost
    for book in books:
        bids, asks = quiet.engine.true_book(book["asset_id"])
        assert tuple((lv["price"], lv["size"]) for lv in reversed(book["bids"])) == bids
        assert tuple((lv["price"], lv["size"]) for lv in reversed(book["asks"])) == asks
        assert (book["hash"], book["timestamp"]) == quiet.engine.book_state(book["asset_id"])
    fresh = await Client.open(quiet.ws_url, lost)
    await fresh.barrier()
    assert [b["asset_id"] for b in json.loads(fresh.texts[0])] == lost
    for book in json.loads(fresh.texts[0]):
        assert (book["hash"], book["timestamp"]) == quiet.engine.book_state(book["asset_id"])
    await client.close()
    await fresh.close()


async def test_lose_on_a_live_connection_and_lose_new(quiet: Simulator) -> None:
    """SimConnection.lose stops a flowing token at once; with `lose_new`, tokens a later
    subscribe adds never arrive while the first ones keep flowing."""
    tokens = quiet.engine.tokens()
    client = await Client.open(quiet.ws_url, tokens[:4])
    await quiet.wait_connections(1)
    await client.barrier()
    quiet.connections[0].lose([tokens[0]])
    quiet.connections[0].faults.lose_new = True
    await client.ws.send(json.dumps({"operation": "subscribe", "assets_ids": tokens[4:]}))
    await client.barrier()
    start = len(client.objects)
    quiet.engine.step(800)
    await client.barrier()
    later = {t for o in client.objects[start:] for t in named(o)}
    assert later and not later & {tokens[0], *tokens[4:]}
    assert tokens[1] in later and quiet.connections[0].subscribed == set(tokens)
    assert quiet.connections[0].faults.lost == {tokens[0], *tokens[4:]}
    assert not quiet.faults.lost  # new connections are not affected
    await client.close()


async def test_rescue_odds_on_resubscribe(quiet: Simulator) -> None:
    """With `rescue`, unsubscribe + subscribe brings back some lost tokens (here all, at 1.0),
    with their books; without it none (the silent-loss test)."""
    tokens = quiet.engine.tokens()
    quiet.faults.rescue = 1.0
    quiet.lose_on_next_connection(tokens[:2])
    client = await Client.open(quiet.ws_url, tokens)
    await client.barrier()
    for op in ("unsubscribe", "subscribe"):
        await client.ws.send(json.dumps({"operation": op, "assets_ids": tokens[:2]}))
    await client.barrier()
    assert [b["asset_id"] for b in json.loads(client.texts[-2])] == tokens[:2]
    assert quiet.connections[0].faults.lost == frozenset()
    await client.close()


async def test_lose_and_set_faults_controls(quiet: Simulator) -> None:
    """Simulator.lose targets one connection by id; set_faults sets new and live ones."""
    a = await Client.open(quiet.ws_url, [])
    b = await Client.open(quiet.ws_url, [])
    await quiet.wait_connections(2)
    one, two = quiet.connections
    assert quiet.lose(["5"], conn_id=two.id) == 1 and one.faults.lost == frozenset()
    assert two.faults.lost == {"5"}
    quiet.set_faults(sweeps=True)
    assert one.faults.sweeps and two.faults.sweeps and quiet.faults.sweeps
    quiet.set_faults(live=False, wrong_top=True)
    assert quiet.faults.wrong_top and not one.faults.wrong_top
    with pytest.raises(ValueError, match="nonsense"):
        quiet.set_faults(nonsense=True, sweeps=False)
    assert one.faults.sweeps  # nothing was set
    quiet.set_faults(lost=["7", "8"])
    assert one.faults.lost == two.faults.lost == quiet.faults.lost == {"7", "8"}
    await a.close()
    await b.close()


def _post_trade_pairs(client: Client) -> list[tuple[int, int]]:
    """(index of the trade's book, index of its last_trade_price) in the client's objects."""
    books: dict[tuple[str, int], int] = {}
    pairs = []
    for i, obj in enumerate(client.objects):
        if obj.get("event_type") == "book":
            books.setdefault((obj["asset_id"], int(obj["timestamp"])), i)
        elif obj.get("event_type") == "last_trade_price":
            j = books.get((obj["asset_id"], int(obj["timestamp"]) - 35))
            if j is not None:
                pairs.append((j, i))
    return pairs


async def test_last_trade_price_follows_its_books_35_ms_later() -> None:
    """With the flow running, each trade's last_trade_price comes after its books, stamped
    35 ms later and arriving about 35 ms later."""
    sim = Simulator(SimConfig(markets=3, seed=2, rate=400.0))
    await sim.start()
    try:
        client = await Client.open(sim.ws_url, sim.engine.tokens())
        await wait_for(lambda: len(_post_trade_pairs(client)) >= 20, 20, "trades")
        paused_at = time.monotonic()
        await sim.pause()
        await client.barrier()
        pairs = [(j, i) for j, i in _post_trade_pairs(client) if client.arrived[i] < paused_at]
        assert len(pairs) >= 15 and all(j < i for j, i in pairs)
        gaps = [client.arrived[i] - client.arrived[j] for j, i in pairs]
        assert statistics.median(gaps) >= 0.03, gaps
        for token in sim.engine.tokens():
            assert client.refs.levels(token) == sim.engine.true_book(token)
        await client.close()
    finally:
        await sim.stop()


async def test_last_trade_price_reaches_clients_at_rate_0_and_paused(quiet: Simulator) -> None:
    """The held-back trades still go out when the flow is paused (steps driven by hand) and
    when it runs flat out (rate 0)."""
    client = await Client.open(quiet.ws_url, quiet.engine.tokens())
    await quiet.wait_connections(1)
    quiet.engine.step(300)
    assert quiet.engine.pending
    await wait_for(lambda: not quiet.engine.pending, 5, "the held-back trades")
    await client.barrier()
    assert len(client.of_type("last_trade_price")) >= 1
    await client.close()
    sim = Simulator(SimConfig(markets=2, seed=3, rate=0.0))
    await sim.start()
    try:
        fast = await Client.open(sim.ws_url, sim.engine.tokens())
        await wait_for(lambda: len(fast.of_type("last_trade_price")) >= 5, 20, "trades")
        await fast.close()
    finally:
        await sim.stop()

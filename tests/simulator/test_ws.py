"""The WS market channel: subscribe shapes, heartbeats, errors, and faithful delivery."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from polybus.simulator import SimConfig, Simulator
from tests.simulator.client import Client
from tests.support import wait_for


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(SimConfig(markets=6, seed=3, rate=2000.0))
    await simulator.start(host="127.0.0.1", port=0, http_port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def quiet(sim: Simulator) -> Simulator:
    """The same simulator with its flow paused: tests drive `engine.step` themselves."""
    await sim.pause()
    return sim


async def test_initial_snapshot_is_one_array_of_worst_first_books(quiet: Simulator) -> None:
    """Subscribing sends one array frame: a book per known asset, worst first, event_type last."""
    tokens = quiet.engine.tokens()[:3]
    client = await Client.open(quiet.ws_url, [*tokens, "123"])
    await client.barrier()
    first = json.loads(client.texts[0])
    assert isinstance(first, list) and [b["asset_id"] for b in first] == tokens
    for book in first:
        assert list(book)[-1] == "event_type" and book["event_type"] == "book"
        bids = [Decimal(lv["price"]) for lv in book["bids"]]
        asks = [Decimal(lv["price"]) for lv in book["asks"]]
        assert bids == sorted(bids) and asks == sorted(asks, reverse=True) and bids and asks
        assert book["tick_size"] == "0.01" and book["last_trade_price"] == ""
        assert all(isinstance(lv["size"], str) for lv in book["bids"] + book["asks"])
        assert book["timestamp"].isdigit() and len(book["hash"]) == 40
    assert client.texts[1:] == ["PONG"]  # no ack, no data while paused
    await client.close()


async def test_unknown_tokens_get_an_empty_array(quiet: Simulator) -> None:
    """Only unknown ids: the snapshot frame is a bare []."""
    client = await Client.open(quiet.ws_url, ["4242", "99"])
    await client.barrier()
    assert client.texts == ["[]", "PONG"]
    await client.close()


async def test_no_snapshot_without_initial_dump(quiet: Simulator) -> None:
    """initial_dump false subscribes without a snapshot."""
    client = await Client.open(quiet.ws_url, quiet.engine.tokens()[:2], initial_dump=False)
    await client.barrier()
    assert client.texts == ["PONG"]
    quiet.engine.step(200)
    await client.barrier()
    assert client.of_type("price_change")
    await client.close()


async def test_every_ping_gets_a_pong(quiet: Simulator) -> None:
    """Each text PING is answered with the text PONG."""
    client = await Client.open(quiet.ws_url, [])
    for _ in range(3):
        await client.barrier()
    assert client.texts.count("PONG") == 3
    await client.close()


async def test_second_initial_message_and_garbage_are_invalid(quiet: Simulator) -> None:
    """A second type:market, non-JSON and unknown messages get the text INVALID OPERATION."""
    tokens = quiet.engine.tokens()
    client = await Client.open(quiet.ws_url, tokens[:1])
    await client.ws.send(json.dumps({"type": "market", "assets_ids": tokens[1:2]}))
    await client.ws.send("hello")
    await client.ws.send(json.dumps({"operation": "dance", "assets_ids": []}))
    await client.barrier()
    assert client.texts[1:] == ["INVALID OPERATION"] * 3 + ["PONG"]
    assert quiet.connections[0].subscribed == {tokens[0]}
    await client.close()


async def test_dynamic_subscribe_and_unsubscribe(quiet: Simulator) -> None:
    """subscribe sends one array of snapshots for new assets; unsubscribe stops their events."""
    a, b = quiet.engine.tokens()[:2], quiet.engine.tokens()[2:4]
    client = await Client.open(quiet.ws_url, a)
    await client.ws.send(json.dumps({"operation": "subscribe", "assets_ids": b}))
    await client.barrier()
    snapshot = json.loads(client.texts[1])
    assert [book["asset_id"] for book in snapshot] == b
    await client.ws.send(json.dumps({"operation": "unsubscribe", "assets_ids": a}))
    await client.barrier()
    before = len(client.objects)
    quiet.engine.step(400)
    await client.barrier()
    later = client.objects[before:]
    assert later and not {t for o in later for t in _assets(o)} & set(a) - set(b)
    await client.close()


def _assets(obj: dict[str, object]) -> set[str]:
    changes = obj.get("price_changes")
    if isinstance(changes, list):
        return {c["asset_id"] for c in changes}
    return {str(obj.get("asset_id"))}


async def test_other_paths_are_404(sim: Simulator) -> None:
    """Only /ws/market upgrades; /ws/ answers HTTP 404 at the handshake."""
    with pytest.raises(InvalidStatus) as info:
        await connect(sim.ws_url.replace("/ws/market", "/ws/"))
    assert info.value.response.status_code == 404


async def test_handshakes_rejected_with_429(sim: Simulator) -> None:
    """reject_handshakes(k) refuses the next k handshakes with 429, then accepts again."""
    sim.reject_handshakes(2)
    for _ in range(2):
        with pytest.raises(InvalidStatus) as info:
            await connect(sim.ws_url)
        assert info.value.response.status_code == 429
    client = await Client.open(sim.ws_url, [])
    await sim.wait_connections(1, timeout=5)
    assert sim.stats.rejected == 2 and sim.stats.accepted == 1
    await client.close()


async def test_client_books_equal_truth_after_pause(sim: Simulator) -> None:
    """A client applying every frame holds exactly engine.true_book once the flow pauses."""
    tokens = sim.engine.tokens()
    client = await Client.open(sim.ws_url, tokens)
    await wait_for(lambda: sim.stats.actions > 1500, 10, "flow")
    await sim.pause()
    await client.barrier()
    assert {o["event_type"] for o in client.objects} >= {"book", "price_change", "last_trade_price"}
    for token in tokens:
        assert client.refs.levels(token) == sim.engine.true_book(token)
    await client.close()


async def test_books_equal_truth_through_every_shaping_fault(sim: Simulator) -> None:
    """With every stream-shaping fault on, a tolerant client still ends on the true books."""
    await sim.pause()
    for flag in (
        "legacy",
        "duplicate",
        "ts_regress",
        "crossed",
        "bursts",
        "drop_bba",
        "delay_bba",
        "unknown",
        "malformed",
        "sweeps",
        "wrong_top",
    ):
        setattr(sim.faults, flag, True)
    tokens = sim.engine.tokens()
    client = await Client.open(sim.ws_url, tokens, custom_feature_enabled=True)
    await client.barrier()
    sim.resume()
    await wait_for(lambda: sim.stats.actions > 1500, 10, "flow")
    await sim.pause()
    await client.barrier()
    for token in tokens:
        assert client.refs.levels(token) == sim.engine.true_book(token)
    await client.close()


async def test_wait_connections_counts_subscribed(sim: Simulator) -> None:
    """wait_connections returns once n live connections have sent their subscription."""
    clients = [await Client.open(sim.ws_url, sim.engine.tokens()[:1]) for _ in range(3)]
    await sim.wait_connections(3, timeout=5)
    assert len(sim.connections) == 3 and all(c.subscribed for c in sim.connections)
    with pytest.raises(TimeoutError):
        await sim.wait_connections(4, timeout=0.05)
    for client in clients:
        await client.close()


async def test_silent_client_is_closed_abruptly() -> None:
    """A client that sends nothing for the silence window is cut off without a close frame."""
    sim = Simulator(SimConfig(markets=2, rate=100.0, silence_timeout=0.3))
    await sim.start()
    try:
        client = await Client.open(sim.ws_url, sim.engine.tokens())
        await wait_for(lambda: client.closed is not None, 5, "the silence cut")
        assert client.ws.close_code == 1006 and sim.stats.silenced == 1
    finally:
        await sim.stop()


async def test_custom_features_and_lifecycle_broadcasts(quiet: Simulator) -> None:
    """Custom-feature connections get best_bid_ask and every new_market/market_resolved."""
    tokens = quiet.engine.tokens()
    plain = await Client.open(quiet.ws_url, tokens[:2])
    custom = await Client.open(quiet.ws_url, tokens[:2], custom_feature_enabled=True)
    bystander = await Client.open(quiet.ws_url, [], custom_feature_enabled=True)
    await quiet.wait_connections(3, timeout=5)
    quiet.engine.step(300)
    quiet.engine.new_market()
    resolved = quiet.engine.markets()[0]
    quiet.engine.resolve(resolved)
    for client in (plain, custom, bystander):
        await client.barrier()
    assert custom.of_type("best_bid_ask") and not plain.of_type("best_bid_ask")
    assert not bystander.of_type("best_bid_ask") and not plain.of_type("new_market")
    for client in (custom, bystander):
        (new,) = client.of_type("new_market")
        assert new["assets_ids"] == list(quiet.engine.markets()[-1].tokens)
        assert list(new)[-1] == "event_type" and new["event_message"]["title"]
        (gone,) = client.of_type("market_resolved")
        assert gone["market"] == resolved.condition_id and gone["event_message"] is None
        assert gone["winning_asset_id"] in resolved.tokens
    bba = custom.of_type("best_bid_ask")[-1]
    assert set(bba) == {
        "market",
        "asset_id",
        "best_bid",
        "best_ask",
        "spread",
        "timestamp",
        "event_type",
    }
    for client in (plain, custom, bystander):
        await client.close()


async def test_resubscribe_of_held_assets_is_no_new_assets(quiet: Simulator) -> None:
    """A subscribe naming only held assets gets the text NO NEW ASSETS and no book; one that
    adds assets gets the books of the new ones only; unsubscribe then subscribe resyncs."""
    a, b = quiet.engine.tokens()[:2]
    client = await Client.open(quiet.ws_url, [a])
    await client.ws.send(json.dumps({"operation": "subscribe", "assets_ids": [a]}))
    await client.ws.send(json.dumps({"operation": "subscribe", "assets_ids": [a, b]}))
    await client.ws.send(json.dumps({"operation": "unsubscribe", "assets_ids": [a]}))
    await client.ws.send(json.dumps({"operation": "subscribe", "assets_ids": [a]}))
    await client.barrier()
    assert client.texts[1] == "NO NEW ASSETS" and client.no_new_assets == 1
    books = [[bk["asset_id"] for bk in json.loads(t)] for t in client.texts if t.startswith("[")]
    assert books == [[a], [b], [a]]
    assert quiet.connections[0].subscribed == {a, b} and quiet.stats.no_new_assets == 1
    await client.close()


async def test_resnapshot_restores_the_old_rule(quiet: Simulator) -> None:
    """With `resnapshot`, a subscribe of a held asset sends its book again (pre-2026 rule)."""
    quiet.faults.resnapshot = True
    token = quiet.engine.tokens()[0]
    client = await Client.open(quiet.ws_url, [token])
    await client.ws.send(json.dumps({"operation": "subscribe", "assets_ids": [token, "7"]}))
    await client.barrier()
    assert [[b["asset_id"] for b in json.loads(t)] for t in client.texts[:2]] == [[token]] * 2
    assert quiet.connections[0].subscribed == {token} and client.no_new_assets == 0
    await client.close()


async def test_timed_lifecycle_reaches_custom_connections() -> None:
    """With new_market_every/resolve_every set, flowing markets appear and resolve live."""
    sim = Simulator(
        SimConfig(markets=3, seed=9, rate=2000.0, new_market_every=0.05, resolve_every=0.1)
    )
    assert (sim.engine.new_market_every, sim.engine.resolve_every) == (100, 200)
    await sim.start()
    try:
        client = await Client.open(sim.ws_url, [], custom_feature_enabled=True)
        await wait_for(
            lambda: bool(client.of_type("new_market") and client.of_type("market_resolved")),
            10,
            "lifecycle events",
        )
        new = client.of_type("new_market")[0]
        assert sim.engine.market(new["assets_ids"][0]) is not None
    finally:
        await sim.stop()


async def test_handshake_rate_limit() -> None:
    """Beyond handshake_limit handshakes per second, the next ones get 429."""
    sim = Simulator(SimConfig(markets=1, rate=100.0, handshake_limit=2))
    await sim.start()
    try:
        clients = [await Client.open(sim.ws_url, []) for _ in range(2)]
        with pytest.raises(InvalidStatus) as info:
            await connect(sim.ws_url)
        assert info.value.response.status_code == 429 and sim.stats.rejected == 1
        for client in clients:
            await client.close()
    finally:
        await sim.stop()

"""Fault injection: each flag does its observable thing on the wire, and nothing else."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from simulator import Faults, SimConfig, Simulator
from simulator.faults import Shaper
from simulator.frames import render
from tests.simulator.client import Client, RefBooks
from tests.support import wait_for


KNOWN = {"book", "price_change", "last_trade_price", "tick_size_change", "best_bid_ask",
         "new_market", "market_resolved"}


@pytest.fixture
async def quiet() -> AsyncIterator[Simulator]:
    """A started simulator with its flow paused: tests drive `engine.step` themselves."""
    sim = Simulator(SimConfig(markets=4, seed=5, rate=100.0))
    await sim.start()
    await sim.pause()
    try:
        yield sim
    finally:
        await sim.stop()


async def faulty(sim: Simulator, steps: int = 600, custom: bool = False,
                 **flags: object) -> Client:
    """A client on every token whose connection has `flags` set, after `steps` engine actions."""
    client = await Client.open(sim.ws_url, sim.engine.tokens(), custom_feature_enabled=custom)
    await sim.wait_connections(len(sim.connections), timeout=5)
    await client.barrier()
    for name, value in flags.items():
        setattr(sim.connections[-1].faults, name, value)
    sim.engine.step(steps)
    await client.barrier()
    return client


def data_texts(client: Client) -> list[str]:
    return [t for t in client.texts[1:] if t != "PONG"]


async def test_stall_keeps_pong_but_sends_no_data(quiet: Simulator) -> None:
    """A stalled connection answers PING with PONG and receives no market data at all."""
    client = await faulty(quiet, stall=True)
    assert data_texts(client) == [] and client.pongs == 2
    await client.ws.send(json.dumps({"operation": "subscribe", "assets_ids": ["1"]}))
    await client.barrier()
    assert data_texts(client) == []
    await client.close()


async def test_drop_closes_without_a_close_frame(quiet: Simulator) -> None:
    """drop() aborts the TCP connection: the client sees code 1006 and no close frame."""
    client = await faulty(quiet, steps=10)
    quiet.connections[0].drop()
    await wait_for(lambda: client.closed is not None, 5, "the drop")
    assert client.ws.close_code == 1006 and client.ws.protocol.close_rcvd is None
    await wait_for(lambda: not quiet.connections, 5, "the server to forget it")


async def test_drop_all_drops_every_connection(quiet: Simulator) -> None:
    """drop_all() cuts every live connection abruptly."""
    clients = [await Client.open(quiet.ws_url, []) for _ in range(3)]
    await quiet.wait_connections(3, timeout=5)
    quiet.drop_all()
    await wait_for(lambda: all(c.closed is not None for c in clients), 5, "all drops")
    assert {c.ws.close_code for c in clients} == {1006} and quiet.stats.dropped == 3


async def test_legacy_shape(quiet: Simulator) -> None:
    """Legacy mode sends pre-2025 price changes: one object per asset with `changes`."""
    client = await faulty(quiet, legacy=True)
    changes = client.of_type("price_change")
    assert changes and all("price_changes" not in c for c in changes)
    for change in changes:
        assert set(change) == {"asset_id", "market", "hash", "timestamp", "changes",
                               "event_type"}
        (level,) = change["changes"]
        assert set(level) == {"price", "side", "size"}
    await client.close()


async def test_duplicates(quiet: Simulator) -> None:
    """Duplicate mode repeats some frames back to back."""
    client = await faulty(quiet, duplicate=True)
    texts = data_texts(client)
    assert any(a == b for a, b in itertools.pairwise(texts))
    assert len(texts) > len(set(texts))
    await client.close()


async def test_malformed_frames(quiet: Simulator) -> None:
    """Malformed mode adds frames that are not valid JSON."""
    client = await faulty(quiet, malformed=True)
    bad = [t for t in data_texts(client) if not _parses(t)]
    assert bad
    await client.close()


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


async def test_unknown_event_types_inside_arrays(quiet: Simulator) -> None:
    """Unknown mode puts objects of unknown event_type in arrays next to valid events."""
    client = await faulty(quiet, unknown=True)
    arrays = [json.loads(t) for t in data_texts(client) if t.startswith("[")]
    mixed = [a for a in arrays if {o["event_type"] for o in a} - KNOWN
             and {o["event_type"] for o in a} & KNOWN]
    assert mixed
    await client.close()


async def test_bursts_group_events_in_arrays(quiet: Simulator) -> None:
    """Burst mode sends several real events in one array frame."""
    client = await faulty(quiet, bursts=True)
    arrays = [json.loads(t) for t in data_texts(client) if t.startswith("[")]
    assert any(len(a) >= 3 and all(o["event_type"] in KNOWN for o in a) for a in arrays)
    await client.close()


async def test_timestamp_regressions(quiet: Simulator) -> None:
    """ts_regress mode sends some events older than the event before them."""
    client = await faulty(quiet, ts_regress=True)
    stamps = [int(o["timestamp"]) for o in client.objects[len(quiet.engine.tokens()):]]
    assert any(b < a for a, b in itertools.pairwise(stamps))
    await client.close()


async def test_transient_crossed_book_is_fixed(quiet: Simulator) -> None:
    """Crossed mode flashes a price_change whose tops cross, and the next frames repair it."""
    client = await faulty(quiet, crossed=True, odds=1.0, steps=50)
    crossed = [c for o in client.of_type("price_change") for c in o["price_changes"]
               if Decimal(c["best_bid"]) >= Decimal(c["best_ask"])]
    assert crossed
    for token in quiet.engine.tokens():
        assert client.refs.levels(token) == quiet.engine.true_book(token)
    await client.close()


async def test_missing_and_delayed_best_bid_ask(quiet: Simulator) -> None:
    """drop_bba loses some best_bid_ask; delay_bba holds them until the next batch."""
    quiet.engine.ltp_delay_ms = 10**9  # no late last_trade_price batch between the two steps
    clean = await faulty(quiet, steps=0, custom=True)
    lossy = await faulty(quiet, steps=0, custom=True, drop_bba=True, odds=0.5)
    late = await faulty(quiet, steps=0, custom=True, delay_bba=True)
    quiet.engine.step(400)
    for client in (clean, lossy, late):
        await client.barrier()
    full = len(clean.of_type("best_bid_ask"))
    assert 0 < len(lossy.of_type("best_bid_ask")) < full
    held = len(late.of_type("best_bid_ask"))
    assert held < full
    quiet.engine.step(400)
    await late.barrier()
    assert len(late.of_type("best_bid_ask")) >= full
    for client in (clean, lossy, late):
        await client.close()


async def test_asset_ceiling_stalls_data_then_snapshots() -> None:
    """Above `ceiling` assets data stops (snapshot still sent); above `snapshot_ceiling`, all."""
    sim = Simulator(SimConfig(markets=6, seed=2, rate=100.0))
    await sim.start()
    await sim.pause()
    sim.faults.ceiling, sim.faults.snapshot_ceiling = 3, 5
    tokens = sim.engine.tokens()
    try:
        under = await Client.open(sim.ws_url, tokens[:2])
        middle = await Client.open(sim.ws_url, tokens[:4])
        over = await Client.open(sim.ws_url, tokens[:6])
        await sim.wait_connections(3, timeout=5)
        sim.engine.step(500)
        for client in (under, middle, over):
            await client.barrier()
        assert len(data_texts(under)) > 10
        assert len(json.loads(middle.texts[0])) == 4 and data_texts(middle) == []
        assert over.texts == ["PONG"]
        for client in (under, middle, over):
            await client.close()
    finally:
        await sim.stop()


async def test_defaults_apply_to_new_connections_only(quiet: Simulator) -> None:
    """sim.faults is copied into connections opened afterwards; live ones keep their flags."""
    before = await Client.open(quiet.ws_url, [])
    await quiet.wait_connections(1, timeout=5)
    quiet.faults.legacy = True
    after = await Client.open(quiet.ws_url, [])
    await quiet.wait_connections(2, timeout=5)
    assert [c.faults.legacy for c in quiet.connections] == [False, True]
    assert quiet.connections[1].faults is not quiet.faults
    await before.close()
    await after.close()


async def test_send_raw_delivers_any_text(quiet: Simulator) -> None:
    """send_raw puts an arbitrary text frame on the wire."""
    client = await Client.open(quiet.ws_url, [])
    await quiet.wait_connections(1, timeout=5)
    await quiet.connections[0].send_raw("{this is not json")
    await client.barrier()
    assert "{this is not json" in client.texts
    await client.close()


def test_shaper_output_still_applies_to_the_truth() -> None:
    """Shaped frames (all faults, many seeds) rebuild the same books as the clean stream."""
    from simulator.engine import Engine

    for seed in range(5):
        engine = Engine(3, seed)
        tokens = set(engine.tokens())
        clean, shaped = RefBooks(), RefBooks()
        for token in tokens:
            snap = engine.book_msg(token)
            clean.apply(snap)
            shaped.apply(snap)
        faults = Faults(legacy=seed % 2 == 0, duplicate=True, ts_regress=True, bursts=True,
                        unknown=True, malformed=True, drop_bba=True, delay_bba=True, odds=0.5)
        shaper = Shaper(seed)
        for _ in range(50):
            msgs = engine.step(20)
            for msg in msgs:
                clean.apply(msg)
            for text in shaper.shape(faults, [(m, render(m)) for m in msgs], tokens):
                if _parses(text.decode("utf-8", "replace")):
                    parsed = json.loads(text)
                    for obj in parsed if isinstance(parsed, list) else [parsed]:
                        shaped.apply(obj)
        assert all(clean.levels(t) == shaped.levels(t) == engine.true_book(t) for t in tokens)

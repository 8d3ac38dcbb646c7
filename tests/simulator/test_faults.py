"""Fault injection: each flag does its observable thing on the wire, and nothing else."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from polybus.simulator import Faults, SimConfig, Simulator
from polybus.simulator.faults import Shaper, restate_sweeps
from polybus.simulator.frames import render
from tests.simulator.client import Client, RefBooks, canon, http
from tests.support import wait_for


KNOWN = {
    "book",
    "price_change",
    "last_trade_price",
    "tick_size_change",
    "best_bid_ask",
    "new_market",
    "market_resolved",
}


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


async def faulty(sim: Simulator, steps: int = 600, custom: bool = False, **flags: object) -> Client:
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
        assert set(change) == {"asset_id", "market", "hash", "timestamp", "changes", "event_type"}
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
    mixed = [
        a
        for a in arrays
        if {o["event_type"] for o in a} - KNOWN and {o["event_type"] for o in a} & KNOWN
    ]
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
    stamps = [int(o["timestamp"]) for o in client.objects[len(quiet.engine.tokens()) :]]
    assert any(b < a for a, b in itertools.pairwise(stamps))
    await client.close()


async def test_transient_crossed_book_is_fixed(quiet: Simulator) -> None:
    """Crossed mode flashes a price_change whose tops cross, and the next frames repair it."""
    client = await faulty(quiet, crossed=True, odds=1.0, steps=50)
    crossed = [
        c
        for o in client.of_type("price_change")
        for c in o["price_changes"]
        if Decimal(c["best_bid"]) >= Decimal(c["best_ask"])
    ]
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
    from polybus.simulator.engine import Engine

    for seed in range(5):
        engine = Engine(3, seed)
        tokens = set(engine.tokens())
        clean, shaped = RefBooks(), RefBooks()
        for token in tokens:
            snap = engine.book_msg(token)
            clean.apply(snap)
            shaped.apply(snap)
        faults = Faults(
            legacy=seed % 2 == 0,
            duplicate=True,
            ts_regress=True,
            bursts=True,
            unknown=True,
            malformed=True,
            drop_bba=True,
            delay_bba=True,
            odds=0.5,
            sweeps=True,
        )
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


def _top(refs: RefBooks, token: str) -> tuple[str, str]:
    bids, asks = refs.levels(token)
    return (bids[0][0] if bids else "0", asks[0][0] if asks else "1")


def _stated(element: dict[str, str]) -> tuple[str, str]:
    return (canon(element["best_bid"]), canon(element["best_ask"]))


def _sweep_runs(objects: list[dict[str, Any]]) -> list[list[int]]:
    """Indices of consecutive price changes sharing market, timestamp and hashes (2+)."""
    runs: list[list[int]] = []
    last: tuple[object, ...] | None = None
    for i, obj in enumerate(objects):
        key = None
        if obj.get("event_type") == "price_change" and "price_changes" in obj:
            key = (
                obj["market"],
                obj["timestamp"],
                frozenset(c["hash"] for c in obj["price_changes"]),
            )
        if key is not None and key == last:
            runs[-1].append(i)
        elif key is not None:
            runs.append([i])
        last = key
    return [r for r in runs if len(r) >= 2]


Row = tuple[str, tuple[str, str], tuple[str, str]]


def _fold(objects: list[dict[str, Any]]) -> list[list[Row]]:
    """Per object: (asset, stated top, folded top) for each price_change element of a book
    held, once the object is applied."""
    refs, out = RefBooks(), []
    for obj in objects:
        refs.apply(obj)
        rows = []
        for c in obj.get("price_changes", []) if isinstance(obj, dict) else []:
            if c["asset_id"] in refs.books:
                rows.append((c["asset_id"], _stated(c), _top(refs, c["asset_id"])))
        out.append(rows)
    return out


async def test_sweeps_state_the_top_before_the_removals() -> None:
    """With `sweeps`, a sweep's frames share one timestamp and all state the post-sweep top,
    so the book folded so far disagrees (sometimes crossed) until the run ends; a connection
    without the flag sees each element's own top; both end on the true books."""
    sim = Simulator(SimConfig(markets=6, seed=3, rate=2000.0))
    await sim.start()
    try:
        tokens = sim.engine.tokens()
        plain = await Client.open(sim.ws_url, tokens)
        await sim.wait_connections(1)
        sim.faults.sweeps = True
        swept = await Client.open(sim.ws_url, tokens)
        await sim.wait_connections(2)
        await wait_for(lambda: sim.stats.actions > 4000, 20, "flow")
        await sim.pause()
        for client in (plain, swept):
            await client.barrier()
            for token in tokens:
                assert client.refs.levels(token) == sim.engine.true_book(token)
        folded = _fold(plain.objects)
        assert all(stated == top for rows in folded for _, stated, top in rows)
        runs, folded = _sweep_runs(swept.objects), _fold(swept.objects)
        assert len(runs) >= 10
        early_mismatch = crossed = rests_first = 0
        for run in runs:
            final = {a: s for a, s, _ in folded[run[-1]]}
            assert all(s == final[a] for i in run for a, s, _ in folded[i])
            assert all(s == top for _, s, top in folded[run[-1]])  # the run end agrees
            early = [top for i in run[:-1] for a, s, top in folded[i] if s != top]
            early_mismatch += bool(early)
            crossed += any(Decimal(b) >= Decimal(a) for b, a in early)
            rests_first += swept.objects[run[0]]["price_changes"][0]["size"] != "0"
        assert early_mismatch == len(runs) and crossed >= 1 and rests_first >= 1
        await plain.close()
        await swept.close()
    finally:
        await sim.stop()


def test_restate_sweeps_only_touches_sweep_runs() -> None:
    """restate_sweeps rewrites runs with shared hashes only, keeps every level update, and
    leaves other messages byte for byte."""
    from polybus.simulator.engine import Engine

    engine = Engine(4, 9)
    msgs = engine.step(3000)
    items = [(m, render(m)) for m in msgs]
    out = restate_sweeps(items)
    assert len(out) == len(items)
    changed = [(a, b) for a, b in zip(items, out, strict=True) if a[1] != b[1]]
    assert changed and len(changed) < len(items) // 4
    for (before, _), (after, text) in changed:
        assert before["event_type"] == after["event_type"] == "price_change"
        assert text == render(after)

    def updates(msgs: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
        return sorted(
            (c["asset_id"], c["side"], c["price"], c["size"])
            for m in msgs
            for c in m.get("price_changes", [])
        )

    assert updates([m for m, _ in items]) == updates([m for m, _ in out])


async def test_wrong_top_is_a_persistent_mismatch(quiet: Simulator) -> None:
    """`wrong_top` states a best_bid a tick off on every element of some (market, timestamp)
    runs: still wrong once the run is complete, on the tick grid, levels still true."""
    client = await faulty(quiet, wrong_top=True, odds=0.3)
    last: dict[tuple[str, str], tuple[int, int]] = {}
    wrong_elements: dict[tuple[str, str], list[bool]] = {}
    folded = _fold(client.objects)
    for i, obj in enumerate(client.objects):
        if obj.get("event_type") == "price_change":
            run = (obj["market"], obj["timestamp"])
            last[run] = (i, len(folded[i]))
            wrong_elements.setdefault(run, []).extend(s != t for _, s, t in folded[i])
    wrong = [r for r, flags in wrong_elements.items() if any(flags)]
    assert wrong and len(wrong) < len(wrong_elements)
    for run in wrong:
        assert all(wrong_elements[run])  # every element of a wrong run is wrong
        i, _ = last[run]
        assert all(s != t for _, s, t in folded[i])  # not repaired by the run's end
    for obj in client.of_type("price_change"):
        for c in obj["price_changes"]:
            market = quiet.engine.market(c["asset_id"])
            assert market is not None
            assert (Decimal(c["best_bid"]) * 10_000) % market.tick == 0
    for token in quiet.engine.tokens():
        assert client.refs.levels(token) == quiet.engine.true_book(token)
    await client.close()


async def test_odd_ticks_with_sweeps_end_on_the_truth() -> None:
    """Markets on 0.005 and 0.0025 announce those tick strings, every price on the wire is on
    the grid exactly, and a client through sweeps and bursts ends on the true books."""
    sim = Simulator(SimConfig(markets=6, seed=4, rate=2000.0, odd_ticks=0.5))
    sim.faults.sweeps = sim.faults.bursts = True
    await sim.start()
    try:
        tokens = sim.engine.tokens()
        client = await Client.open(sim.ws_url, tokens)
        await wait_for(lambda: sim.stats.actions > 3000, 20, "flow")
        await sim.pause()
        await client.barrier()
        ticks = {b["asset_id"]: b["tick_size"] for b in json.loads(client.texts[0])}
        assert {"0.005", "0.0025"} <= set(ticks.values())
        for obj in client.objects:
            for c in obj.get("price_changes", []):
                tick = Decimal(ticks[c["asset_id"]])
                assert Decimal(c["price"]) % tick == 0 and Decimal(c["best_bid"]) % tick == 0
        for token in tokens:
            assert client.refs.levels(token) == sim.engine.true_book(token)
        odd = next(t for t, tick in ticks.items() if tick == "0.0025")
        status, body = await http(f"{sim.http_url}/tick-size?token_id={odd}")
        assert (status, body) == (200, {"minimum_tick_size": 0.0025})
        await client.close()
    finally:
        await sim.stop()


async def test_stuck_cross_stays_until_a_resync(quiet: Simulator) -> None:
    """`stuck_cross` sends that many crossed flashes and never their fix: the book is left
    crossed and off the truth (until a resync or the market's next post-trade books);
    unsubscribe + subscribe brings the true book back."""
    client = await faulty(quiet, steps=0, stuck_cross=1)
    quiet.engine.step(300)
    await client.barrier()
    assert quiet.connections[0].faults.stuck_cross == 0
    stuck = [t for t in quiet.engine.tokens() if client.refs.levels(t) != quiet.engine.true_book(t)]
    assert len(stuck) == 2  # both legs of the one market
    bids, asks = client.refs.levels(stuck[0])
    assert Decimal(bids[0][0]) >= Decimal(asks[0][0])
    for op in ("unsubscribe", "subscribe"):
        await client.ws.send(json.dumps({"operation": op, "assets_ids": stuck}))
    await client.barrier()
    for t in quiet.engine.tokens():
        assert client.refs.levels(t) == quiet.engine.true_book(t)
    await client.close()

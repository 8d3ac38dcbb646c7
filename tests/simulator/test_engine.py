"""The pure market engine: determinism, mirrored books, wire shapes of what it emits."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

import pytest

from polybus.simulator.engine import Engine
from polybus.simulator.units import ONE, fmt_price, fmt_size, padded_price
from tests.simulator.client import RefBooks


def fixed_clock() -> int:
    return 1_791_201_600_000


def run(seed: int, steps: int, markets: int = 8) -> tuple[Engine, list[dict[str, object]]]:
    engine = Engine(markets, seed, clock=fixed_clock)
    return engine, engine.step(steps)


def test_same_seed_same_books_and_messages() -> None:
    """Two engines with one seed and one step count produce identical books and messages."""
    a, msgs_a = run(11, 3000)
    b, msgs_b = run(11, 3000)
    assert msgs_a == msgs_b
    assert a.tokens() == b.tokens()
    assert all(a.true_book(t) == b.true_book(t) for t in a.tokens())
    _, other = run(12, 3000)
    assert other != msgs_a


def test_steps_compose_and_snapshots_do_not_perturb_flow() -> None:
    """step(a)+step(b) equals step(a+b), and asking for snapshots never changes the flow."""
    one, msgs = run(5, 1000)
    two = Engine(8, 5, clock=fixed_clock)
    split = two.step(400)
    for token in two.tokens():
        two.book_msg(token, initial=True)
    split += two.step(600)
    assert split == msgs
    assert [one.true_book(t) for t in one.tokens()] == [two.true_book(t) for t in two.tokens()]


def test_ids_look_like_polymarket() -> None:
    """Token ids are 76–78 digit decimal strings and condition ids 0x + 64 hex."""
    engine = Engine(30, 2)
    assert all(re.fullmatch(r"[1-9]\d{75,77}", t) for t in engine.tokens())
    assert len(set(engine.tokens())) == 60
    assert all(re.fullmatch(r"0x[0-9a-f]{64}", m.condition_id) for m in engine.markets())


def test_no_book_is_the_exact_mirror_of_yes() -> None:
    """After many steps each NO book is the YES book mirrored (1 − p, sides swapped)."""
    engine, _ = run(3, 5000)

    def flip(levels: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return tuple((format(1 - Decimal(p), "f"), s) for p, s in levels)

    for m in engine.markets():
        yes_bids, yes_asks = engine.true_book(m.yes)
        no_bids, no_asks = engine.true_book(m.no)
        assert no_bids == flip(yes_asks) and no_asks == flip(yes_bids)
        assert no_bids and no_asks


def test_books_never_cross_stay_on_grid_and_deep() -> None:
    """Every book stays uncrossed, on its tick grid, and several levels deep on each side."""
    engine = Engine(10, 9)
    for _ in range(40):
        engine.step(250)
        for m in engine.markets():
            bid, ask = m.top()
            assert bid is not None and ask is not None and bid < ask
            assert all(p % m.tick == 0 and 0 < p < ONE for p in [*m.bids, *m.asks])
            assert min(len(m.bids), len(m.asks)) >= 1
            assert all(s > 0 for s in [*m.bids.values(), *m.asks.values()])
    depth = [len(m.bids) + len(m.asks) for m in engine.markets()]
    assert sum(depth) / len(depth) >= 6


def test_true_book_is_canonical_and_best_first() -> None:
    """true_book spells prices and sizes canonically, bids highest first, asks lowest first."""
    engine, _ = run(4, 2000)
    for token in engine.tokens():
        bids, asks = engine.true_book(token)
        for price, size in [*bids, *asks]:
            assert price == format(Decimal(price).normalize(), "f")
            assert size == format(Decimal(size).normalize(), "f")
        assert [Decimal(p) for p, _ in bids] == sorted((Decimal(p) for p, _ in bids), reverse=True)
        assert [Decimal(p) for p, _ in asks] == sorted(Decimal(p) for p, _ in asks)


def test_price_change_has_both_legs_mirrored() -> None:
    """Every price_change has a YES and a NO element: 1 − p, opposite side, same size, 40-hex."""
    engine, msgs = run(6, 2000)
    changes = [m for m in msgs if m["event_type"] == "price_change"]
    assert len(changes) > 500
    first_assets = set()
    for msg in changes:
        assert list(msg)[-1] == "event_type"
        a, b = msg["price_changes"]  # type: ignore[misc]
        market = engine.market(a["asset_id"])
        assert market is not None and {a["asset_id"], b["asset_id"]} == set(market.tokens)
        assert Decimal(a["price"]) + Decimal(b["price"]) == 1
        assert {a["side"], b["side"]} == {"BUY", "SELL"} and a["size"] == b["size"]
        assert all(re.fullmatch(r"[0-9a-f]{40}", e["hash"]) for e in (a, b))
        assert Decimal(a["best_bid"]) + Decimal(b["best_ask"]) == 1
        first_assets.add(a["asset_id"] == market.yes)
    assert first_assets == {True, False}  # element order varies
    assert any(e["size"] == "0" for m in changes for e in m["price_changes"])  # type: ignore[attr-defined]


def test_tops_in_price_change_are_post_change() -> None:
    """Replaying messages gives books whose tops match each element's best_bid/best_ask."""
    engine = Engine(4, 8, clock=fixed_clock)
    refs = RefBooks()
    for token in engine.tokens():
        refs.apply(engine.book_msg(token, initial=True))
    for msg in engine.step(3000):
        refs.apply(msg)
        for e in msg.get("price_changes", []):  # type: ignore[attr-defined]
            bids, asks = refs.levels(e["asset_id"])
            assert (bids[0][0] if bids else "0") == e["best_bid"]
            assert (asks[0][0] if asks else "1") == e["best_ask"]
    assert all(refs.levels(t) == engine.true_book(t) for t in engine.tokens())


class StepClock:
    """A clock the test moves by hand (ms)."""

    def __init__(self) -> None:
        self.now = 1_791_201_600_000

    def __call__(self) -> int:
        return self.now


def _trades(msgs: list[dict[str, object]]) -> list[tuple[list[dict[str, object]], ...]]:
    """(price_changes, [book, book]) of each trade: the changes with the books' hashes
    right before them (a trade's elements all carry its final hashes)."""
    out = []
    for i, msg in enumerate(msgs):
        if (
            msg["event_type"] == "book"
            and msgs[i + 1 : i + 2]
            and msgs[i + 1]["event_type"] == "book"
        ):
            hashes = {msg["hash"], msgs[i + 1]["hash"]}
            j = i
            while (
                msgs[j - 1]["event_type"] == "price_change"
                and {e["hash"] for e in msgs[j - 1]["price_changes"]} == hashes
            ):  # type: ignore[attr-defined]
                j -= 1
            out.append((msgs[j:i], msgs[i : i + 2]))
    return out


def test_trade_is_price_change_then_both_books_then_late_last_trade() -> None:
    """A trade: its price_change(s), the traded token's book, the other leg's, and the
    last_trade_price only once the clock is 35 ms on, stamped 35 ms after the books."""
    clock = StepClock()
    engine = Engine(6, 7, clock=clock)
    msgs: list[dict[str, object]] = []
    for _ in range(400):
        msgs += engine.step(5)
        clock.now += 1
    trades = _trades(msgs)
    assert len(trades) > 50
    for changes, (traded, other) in trades:
        assert changes and all(c["event_type"] == "price_change" for c in changes)
        market = engine.market(str(traded["asset_id"]))
        assert market is not None and {traded["asset_id"], other["asset_id"]} == set(market.tokens)
        assert changes[0]["price_changes"][0]["asset_id"] == traded["asset_id"]  # type: ignore[index]
        for book in (traded, other):
            assert "tick_size" not in book and "last_trade_price" not in book
            assert list(book)[-1] == "event_type" and book["timestamp"] == changes[0]["timestamp"]
            (leg,) = [
                e
                for e in changes[-1]["price_changes"]  # type: ignore[attr-defined]
                if e["asset_id"] == book["asset_id"]
            ]
            assert book["hash"] == leg["hash"]
    ltps = [(i, m) for i, m in enumerate(msgs) if m["event_type"] == "last_trade_price"]
    assert len(ltps) >= len(trades)
    for i, ltp in ltps:
        assert re.fullmatch(r"0x[0-9a-f]{64}", str(ltp["transaction_hash"]))
        assert all(isinstance(v, str) for v in ltp.values())
        books = [
            m
            for m in msgs[:i]
            if m["event_type"] == "book"
            and m["asset_id"] == ltp["asset_id"]
            and int(str(m["timestamp"])) + 35 == int(str(ltp["timestamp"]))
        ]
        assert books, "no post-trade book 35 ms before the trade"
        later = [m for m in msgs[i:] if m["event_type"] != "last_trade_price"]
        assert not later or int(str(later[0]["timestamp"])) >= int(str(ltp["timestamp"]))
    due = [m for d, m in engine.pending if d <= clock.now]
    assert engine.release() == due
    held = [m for _, m in engine.pending]
    assert held and engine.release() == [] and engine.flush() == held and not engine.pending


def test_sweeps_take_two_or_three_levels_in_one_timestamp() -> None:
    """Some trades sweep 2–3 whole levels: one price_change per level, one timestamp, the
    final book's hashes on every element, each element stating its own post-element top."""
    engine = Engine(8, 3, clock=fixed_clock)
    refs = RefBooks()
    for token in engine.tokens():
        refs.apply(engine.book_msg(token))
    msgs = engine.step(6000)
    sweeps = [c for c, _ in _trades(msgs) if len(c) >= 2]
    assert len(sweeps) > 20
    assert {
        sum(e["size"] == "0" for m in c for e in m["price_changes"][:1])  # type: ignore[attr-defined]
        for c in sweeps
    } == {2, 3}
    for changes in sweeps:
        assert len({tuple(e["hash"] for e in m["price_changes"]) for m in changes}) == 1  # type: ignore[attr-defined]
    for msg in msgs:
        refs.apply(msg)
        for e in msg.get("price_changes", []):  # type: ignore[attr-defined]
            bids, asks = refs.levels(e["asset_id"])
            assert ((bids[0][0] if bids else "0"), (asks[0][0] if asks else "1")) == (
                e["best_bid"],
                e["best_ask"],
            )
    assert all(refs.levels(t) == engine.true_book(t) for t in engine.tokens())


def test_books_are_stamped_with_their_last_change() -> None:
    """book_msg carries the hash and timestamp of the token's last price_change element."""
    clock = StepClock()
    engine = Engine(3, 4, clock=clock)
    last: dict[str, tuple[str, str]] = {}
    for _ in range(300):
        for msg in engine.step(1):
            for e in msg.get("price_changes", []):  # type: ignore[attr-defined]
                last[e["asset_id"]] = (e["hash"], str(msg["timestamp"]))
        clock.now += 3
    for token in engine.tokens():
        book = engine.book_msg(token, initial=True)
        assert (book["hash"], book["timestamp"]) == last[token] == engine.book_state(token)


def test_odd_ticks_stay_exact_on_their_grid() -> None:
    """odd_ticks puts markets on 0.005 and 0.0025 (never reticked); every level stays on the
    grid, books never cross, and a client folding the frames ends on the truth."""
    engine = Engine(8, 5, clock=fixed_clock, odd_ticks=0.5)
    odd = [m for m in engine.markets() if m.tick in (50, 25)]
    assert {m.tick for m in odd} == {50, 25} and all(m.fixed_tick for m in odd)
    refs = RefBooks()
    for token in engine.tokens():
        book = engine.book_msg(token)
        refs.apply(book)
        m = engine.market(token)
        assert m is not None and book["tick_size"] == {50: "0.005", 25: "0.0025"}.get(
            m.tick, book["tick_size"]
        )
    for _ in range(30):
        msgs = engine.step(200)
        for msg in msgs:
            refs.apply(msg)
            assert (
                msg["event_type"] != "tick_size_change"
                or engine.market(str(msg["asset_id"])) not in odd
            )
        for m in odd:
            bid, ask = m.top()
            assert bid is not None and ask is not None and bid < ask
            assert all(p % m.tick == 0 for p in [*m.bids, *m.asks])
            for token in m.tokens:
                for price, _ in [*engine.true_book(token)[0], *engine.true_book(token)[1]]:
                    assert (Decimal(price) / (Decimal(m.tick) / ONE)) % 1 == 0
    assert all(refs.levels(t) == engine.true_book(t) for t in engine.tokens())
    quarter = [m for m in odd if m.tick == 25]
    assert any(p % 50 for m in quarter for p in [*m.bids, *m.asks])  # really on 0.0025


def test_odd_ticks_default_off() -> None:
    """Without odd_ticks every market starts on 0.01 or 0.001, as before."""
    assert {m.tick for m in Engine(40, 2).markets()} <= {100, 10}


def test_books_are_worst_first_with_initial_extras() -> None:
    """Snapshots list bids ascending and asks descending; initial ones carry tick and last trade."""
    engine, _ = run(1, 500)
    for token in engine.tokens():
        book = engine.book_msg(token, initial=True)
        bids = [Decimal(lv["price"]) for lv in book["bids"]]
        asks = [Decimal(lv["price"]) for lv in book["asks"]]
        assert bids == sorted(bids) and asks == sorted(asks, reverse=True)
        assert book["tick_size"] in ("0.01", "0.001") and list(book)[-1] == "event_type"
        assert isinstance(book["last_trade_price"], str)
    fresh = Engine(2, 1)
    assert fresh.book_msg(fresh.tokens()[0])["last_trade_price"] == ""


def test_tick_size_changes_at_the_extremes_for_both_tokens() -> None:
    """Prices beyond 0.96/0.04 switch the tick to 0.001 (and back), announced for both tokens."""
    engine = Engine(30, 21, clock=fixed_clock)
    msgs = engine.step(40_000)
    ticks = [m for m in msgs if m["event_type"] == "tick_size_change"]
    assert {(m["old_tick_size"], m["new_tick_size"]) for m in ticks} == {
        ("0.01", "0.001"),
        ("0.001", "0.01"),
    }
    for a, b in itertools.pairwise(ticks[:2]):
        assert a["market"] == b["market"] and a["asset_id"] != b["asset_id"]


def test_lifecycle_is_step_driven_and_deterministic() -> None:
    """New markets and resolutions happen every k steps, identically for one seed."""
    a = Engine(5, 3, clock=fixed_clock, new_market_every=100, resolve_every=150)
    b = Engine(5, 3, clock=fixed_clock, new_market_every=100, resolve_every=150)
    msgs = a.step(600)
    assert msgs == b.step(600)
    assert len([m for m in msgs if m["event_type"] == "new_market"]) == 6
    resolved = [m for m in msgs if m["event_type"] == "market_resolved"]
    assert len(resolved) == 4
    assert len(a.markets()) == 11 and len(a.tokens()) == 2 * 7
    gone = resolved[0]["assets_ids"]
    assert not set(gone) & set(a.tokens())  # type: ignore[arg-type]


def test_sink_receives_every_message() -> None:
    """The sink sees exactly what step() returns (the server broadcasts through it)."""
    engine = Engine(3, 1, clock=fixed_clock)
    seen: list[dict[str, object]] = []
    engine.sink = seen.extend
    assert engine.step(50) == seen


@pytest.mark.parametrize(
    ("pips", "text"), [(4800, "0.48"), (10, "0.001"), (ONE, "1"), (0, "0"), (4805, "0.4805")]
)
def test_price_spelling(pips: int, text: str) -> None:
    """Prices in pips spell canonically."""
    assert fmt_price(pips) == text


@pytest.mark.parametrize(
    ("cents", "text"), [(120_000, "1200"), (31_050, "310.5"), (27_525, "275.25"), (5, "0.05")]
)
def test_size_spelling(cents: int, text: str) -> None:
    """Sizes in cents spell canonically."""
    assert fmt_size(cents) == text


def test_padded_price_is_live_style() -> None:
    """Padded prices keep three decimals like live last_trade_price ("0.480")."""
    assert padded_price(4800) == "0.480" and padded_price(4805) == "0.4805"


def test_sweep_on_demand() -> None:
    """engine.sweep() makes a 2–3 level sweep now, identically for one seed, and the
    messages still fold to the truth."""
    a, b = Engine(3, 8, clock=fixed_clock), Engine(3, 8, clock=fixed_clock)
    refs = RefBooks()
    for token in a.tokens():
        refs.apply(a.book_msg(token))
    for _ in range(20):
        msgs = a.sweep()
        assert msgs == b.sweep()
        changes, _books = _trades(msgs)[0]
        assert len(changes) >= 2 and msgs[len(changes)]["event_type"] == "book"
        for msg in msgs:
            refs.apply(msg)
        for msg in a.step(50) + a.flush():
            refs.apply(msg)
        b.step(50)
        b.flush()
    assert all(refs.levels(t) == a.true_book(t) for t in a.tokens())

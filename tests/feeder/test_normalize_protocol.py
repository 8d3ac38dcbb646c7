"""The normalizer against every example frame of PROTOCOL.md §7, with exact expected events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, strategies as st

from feeder.normalize import Normalizer
from wire.events import (
    BestBidAsk,
    Book,
    MarketEvent,
    PriceChange,
    TickSizeChange,
    Trade,
)


DATA = Path(__file__).resolve().parents[1] / "data" / "protocol"
A = "0xa4c123b1612dd272d1371c17149d439536b3216fdaeeb975729fae923d5a4fd1"
B = "0x2aabfe228f219e9cb0eb53f16947ccf25ec84d8dbc74254770f58904dba41ecc"
C = "0xcc3fc1626e53a13043b026c48bbf33feff9243a8f506b40928b5b7a767c76fb0"
YES = "70431576231964937843803106892715746780871139131450600661571484047788631532544"
NO = "95360841637169588127682974065479463901706979127607889470280694904432390648586"
TB = "53966883548763300579689511546218374706990245415845477294242165803001060798009"
C_YES = "52567027047371632593076659312946699471335580901460942718553106372418598001212"
C_NO = "35272125778089871436089598811700164788858892471896725763303934452327763738475"


def frame(name: str) -> str:
    return (DATA / f"{name}.txt").read_text()


def test_initial_snapshot_array_gives_both_books_best_first() -> None:
    """The one-array initial dump yields a Book per token, levels re-sorted best first."""
    norm = Normalizer([YES, NO])
    out = norm.feed(frame("initial_snapshot"), 1)
    assert out.events == [
        Book(YES, A, "1791201600123", (("0.47", "310.5"), ("0.46", "850"), ("0.45", "1200")),
             (("0.49", "275.25"), ("0.51", "640"), ("0.52", "900")),
             "d440e50454f31af3176813e02ea68ef786e4d3ce", "ws", "0.01", "0.48"),
        Book(NO, A, "1791201600123", (("0.51", "275.25"), ("0.49", "640"), ("0.48", "900")),
             (("0.53", "310.5"), ("0.54", "850"), ("0.55", "1200")),
             "a27d26934b484e73cf575dcad6ba2b0aee0ca923", "ws", "0.01", "0.52"),
    ]
    assert out.quarantine == [] and out.data and not out.pong
    assert norm.counts["event.book"] == 2


def test_unknown_token_answer_is_an_empty_array() -> None:
    """`[]` is data with no events and nothing quarantined."""
    out = Normalizer([YES]).feed("[]", 1)
    assert (out.events, out.quarantine, out.data) == ([], [], True)


def test_price_change_both_legs_when_both_subscribed() -> None:
    """A new bid on YES gives one PriceChange per leg, with each leg's own tops and hash."""
    out = Normalizer([YES, NO]).feed(frame("price_change_add"), 1)
    assert out.events == [
        PriceChange(YES, "1791201601406", "bid", "0.48", "150", "0.48", "0.49",
                    "732881584d8c4fa2815d2802827283e0ad841735"),
        PriceChange(NO, "1791201601406", "ask", "0.52", "150", "0.51", "0.52",
                    "81569969e58b081006f7e3dfc967a64cb14028d5"),
    ]


def test_the_other_leg_is_filtered_and_counted() -> None:
    """Subscribed to YES only, the NO element is filtered, never half-published."""
    norm = Normalizer([YES])
    out = norm.feed(frame("price_change_cancel"), 1)
    assert out.events == [PriceChange(YES, "1791201602011", "ask", "0.49", "0", "0.48", "0.51",
                                      "99724caf4941d4072014b3ce107f80e222f82876")]
    assert norm.counts["filtered.foreign_token"] == 1


def test_trade_then_post_trade_book() -> None:
    """The trade frame and the post-trade book (no tick_size or last trade) normalize exactly."""
    norm = Normalizer([YES])
    trade_text, book_text = frame("trade_then_book").strip().splitlines()
    assert norm.feed(trade_text, 1).events == [
        Trade(YES, "1791201603550", "0.51", "100", "BUY", "0",
              "0x08f86bebb2737f6a6f0fb23c6f5da2cec255404e4fb440034d6608697a8d41be")]
    assert norm.feed(book_text, 2).events == [
        Book(YES, A, "1791201603561",
             (("0.48", "150"), ("0.47", "310.5"), ("0.46", "850"), ("0.45", "1200")),
             (("0.51", "540"), ("0.52", "900")), "7efc2f91624a8940f1f836f99eee3692f09e2e8c")]


def test_best_bid_ask_and_tick_size_change() -> None:
    """The custom-feature top of book and a tick change normalize exactly."""
    assert Normalizer([YES]).feed(frame("best_bid_ask"), 1).events == [
        BestBidAsk(YES, "1791201603561", "0.48", "0.51", "0.03")]
    assert Normalizer([TB]).feed(frame("tick_size_change"), 1).events == [
        TickSizeChange(TB, "1791201610007", "0.01", "0.001")]


def test_lifecycle_events_are_global() -> None:
    """new_market and market_resolved come out even when no token is subscribed."""
    norm = Normalizer([])
    assert norm.feed(frame("new_market"), 1).markets == [
        MarketEvent("new_market", C, "2231457", (C_YES, C_NO), "1791201620400",
                    question="Will ETH close above $3,200 on October 9?",
                    slug="eth-above-3200-on-october-9", outcomes=("Yes", "No"),
                    tick_size="0.01")]
    assert norm.feed(frame("market_resolved"), 2).markets == [
        MarketEvent("market_resolved", C, "2231457", (C_YES, C_NO), "1791736000512",
                    winning_asset_id=C_YES, winning_outcome="Yes")]


def test_legacy_price_change_shapes() -> None:
    """The pre-2025 `changes` shape and the 2024 flat shape give PriceChanges without tops."""
    norm = Normalizer([YES])
    assert norm.feed(frame("legacy_price_change"), 1).events == [
        PriceChange(YES, "1757894400000", "bid", "0.48", "150", "", "",
                    "662248b483b7ffc050fec94dbca3a0aac36098b2")]
    flat = {"asset_id": YES, "market": A, "price": ".480", "side": "SELL", "size": "10.0",
            "hash": "h", "timestamp": "5", "event_type": "price_change"}
    assert norm.feed(orjson.dumps(flat), 2).events == [
        PriceChange(YES, "5", "ask", "0.48", "10", "", "", "h")]


def test_text_frames_are_filtered_before_json() -> None:
    """PONG and INVALID OPERATION are counted, not parsed; only PONG feeds the heartbeat."""
    norm = Normalizer([YES])
    pong = norm.feed("PONG", 1)
    assert (pong.pong, pong.data, pong.events, pong.quarantine) == (True, False, [], [])
    invalid = norm.feed(b"INVALID OPERATION", 2)
    assert (invalid.pong, invalid.data) == (False, False)
    assert norm.counts["filtered.pong"] == 1
    assert norm.counts["filtered.invalid_operation"] == 1


def test_bad_elements_are_quarantined_without_losing_neighbours() -> None:
    """Malformed JSON, unknown types, missing fields, bad numbers and ids each get a reason."""
    norm = Normalizer([YES])
    assert norm.feed("{oops", 1).quarantine == [("{oops", "malformed_json")]
    good = {"asset_id": YES, "bids": [], "asks": [], "event_type": "book"}
    mixed = [good, {"event_type": "surprise"}, 7,
             {"asset_id": YES, "event_type": "last_trade_price", "size": "1"},
             {"asset_id": YES, "event_type": "last_trade_price", "price": "x", "size": "1"},
             {"asset_id": "0xnope", "event_type": "best_bid_ask"}]
    out = norm.feed(orjson.dumps(mixed), 2)
    assert out.events == [Book(YES, "", "", (), (), "")]
    assert [reason for _, reason in out.quarantine] == [
        "unknown_event_type", "not_an_object", "missing_field:price", "bad_number", "bad_token"]
    assert orjson.loads(out.quarantine[0][0]) == {"event_type": "surprise"}


def test_one_bad_price_change_element_keeps_the_others() -> None:
    """A price_changes element with a bad side is quarantined; its sibling is published."""
    msg = orjson.loads(frame("price_change_add"))
    msg["price_changes"][1]["side"] = "HOLD"
    out = Normalizer([YES, NO]).feed(orjson.dumps(msg), 1)
    assert [e.asset_id for e in out.events] == [YES]
    assert [reason for _, reason in out.quarantine] == ["bad_side"]


def test_duplicates_aliases_and_missing_event_type() -> None:
    """Exact repeats are dropped; buys/sells and books without event_type are understood."""
    norm = Normalizer([YES])
    text = frame("best_bid_ask")
    assert len(norm.feed(text, 1).events) == 1
    assert norm.feed(text, 2).events == []
    assert norm.counts["filtered.duplicate"] == 1
    old = {"asset_id": YES, "market": A, "buys": [{"price": "0.1", "size": "2"}],
           "sells": [{"price": "0.9", "size": "3"}], "bids": None}
    old.pop("bids")
    old["event_type"] = "book"
    assert norm.feed(orjson.dumps(old), 3).events == [
        Book(YES, A, "", (("0.1", "2"),), (("0.9", "3"),), "")]
    bare = {"asset_id": YES, "bids": [{"price": "0.2", "size": "0"}], "asks": []}
    assert norm.feed(orjson.dumps(bare), 4).events == [Book(YES, "", "", (), (), "")]


def test_subscribe_and_unsubscribe_change_filtering() -> None:
    """Tokens added later are accepted; removed ones are filtered."""
    norm = Normalizer([])
    text = frame("best_bid_ask")
    assert norm.feed(text, 1).events == []
    norm.subscribe([YES])
    assert len(norm.feed(text.replace("1791201603561", "1"), 2).events) == 1
    norm.unsubscribe([YES])
    assert norm.feed(text.replace("1791201603561", "2"), 3).events == []


@given(st.lists(st.tuples(st.integers(1, 99), st.integers(0, 3)), max_size=30),
       st.lists(st.tuples(st.integers(1, 99), st.integers(0, 3)), max_size=30))
def test_books_come_out_sorted_whatever_the_input_order(bids, asks) -> None:
    """Random unordered levels: bids strictly descending, asks ascending, last duplicate wins."""
    def raw(levels):
        return [{"price": f"0.{p:02d}", "size": str(s)} for p, s in levels]

    msg = {"asset_id": YES, "bids": raw(bids), "asks": raw(asks), "event_type": "book"}
    [book] = Normalizer([YES]).feed(orjson.dumps(msg), 1).events
    for levels, got, reverse in ((bids, book.bids, True), (asks, book.asks, False)):
        last = dict(levels)
        want = sorted(((p, s) for p, s in last.items() if s), reverse=reverse)
        assert got == tuple((f"0.{p:02d}".rstrip("0"), str(s)) for p, s in want)


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("*.txt")))
def test_every_example_frame_is_used_or_deliberately_filtered(name: str) -> None:
    """No example frame is quarantined: every shape in PROTOCOL.md §7 is understood."""
    norm = Normalizer([YES, NO, TB, C_YES, C_NO])
    for text in frame(name).strip().split("\n{"):
        out = norm.feed(text if text.startswith(("{", "[")) else "{" + text, 1)
        assert out.quarantine == []
        assert out.events or out.markets

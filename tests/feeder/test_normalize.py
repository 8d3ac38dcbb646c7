"""feeder/normalize.py: every PROTOCOL.md §7 frame with exact events, then the rules of §3.

The example frames live in tests/data/protocol/ (verbatim copies of PROTOCOL.md §7).
"""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, strategies as st

from polybus.feeder.normalize import DEDUP_WINDOW, Normalizer
from polybus.wire.errors import InvalidToken
from polybus.wire.events import (
    BestBidAsk,
    Book,
    MarketEvent,
    PriceChange,
    TickSizeChange,
    Trade,
)


DATA = Path(__file__).resolve().parents[1] / "data" / "protocol"
A = "0xa4c123b1612dd272d1371c17149d439536b3216fdaeeb975729fae923d5a4fd1"
C = "0xcc3fc1626e53a13043b026c48bbf33feff9243a8f506b40928b5b7a767c76fb0"
YES = "70431576231964937843803106892715746780871139131450600661571484047788631532544"
NO = "95360841637169588127682974065479463901706979127607889470280694904432390648586"
TB = "53966883548763300579689511546218374706990245415845477294242165803001060798009"
C_YES = "52567027047371632593076659312946699471335580901460942718553106372418598001212"
C_NO = "35272125778089871436089598811700164788858892471896725763303934452327763738475"


def frame(name: str) -> str:
    """One example frame file, as the WebSocket would deliver it (no trailing newline)."""
    return (DATA / f"{name}.txt").read_text().strip()


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def book_msg(**fields: Any) -> dict[str, Any]:
    """A minimal live-shaped book for YES, with `fields` overriding."""
    msg: dict[str, Any] = {
        "market": A,
        "asset_id": YES,
        "timestamp": "1",
        "hash": "h",
        "bids": [],
        "asks": [],
        "event_type": "book",
    }
    msg.update(fields)
    return msg


def change(token: str = YES, **fields: Any) -> dict[str, Any]:
    """One `price_changes` element, with `fields` overriding."""
    element = {
        "asset_id": token,
        "price": "0.48",
        "size": "150",
        "side": "BUY",
        "hash": "h",
        "best_bid": "0.48",
        "best_ask": "0.49",
    }
    element.update(fields)
    return element


def price_change_msg(*elements: Any) -> dict[str, Any]:
    return {
        "market": A,
        "price_changes": list(elements),
        "timestamp": "7",
        "event_type": "price_change",
    }


# --- PROTOCOL.md §7, frame by frame -------------------------------------------------------


def test_initial_snapshot_array() -> None:
    """The initial dump (one array, one book per token) gives two Books sorted best first."""
    norm = Normalizer(tokens=[YES, NO])
    out = norm.feed(frame("initial_snapshot"), 1)
    assert out.events == [
        Book(
            asset_id=YES,
            market=A,
            ts="1791201600123",
            bids=(("0.47", "310.5"), ("0.46", "850"), ("0.45", "1200")),
            asks=(("0.49", "275.25"), ("0.51", "640"), ("0.52", "900")),
            hash="d440e50454f31af3176813e02ea68ef786e4d3ce",
            source="ws",
            tick_size="0.01",
            last_trade_price="0.48",
        ),
        Book(
            asset_id=NO,
            market=A,
            ts="1791201600123",
            bids=(("0.51", "275.25"), ("0.49", "640"), ("0.48", "900")),
            asks=(("0.53", "310.5"), ("0.54", "850"), ("0.55", "1200")),
            hash="a27d26934b484e73cf575dcad6ba2b0aee0ca923",
            source="ws",
            tick_size="0.01",
            last_trade_price="0.52",
        ),
    ]
    assert (out.markets, out.quarantine, out.data, out.pong) == ([], [], True, False)
    assert norm.counts == {"frames": 1, "event.book": 2}


def test_empty_array_for_unknown_token() -> None:
    """`[]` (the answer to an unknown token) is data with no events and nothing quarantined."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed("[]", 1)
    assert (out.events, out.markets, out.quarantine, out.data, out.pong) == (
        [],
        [],
        [],
        True,
        False,
    )
    assert norm.counts == {"frames": 1}


def test_price_change_new_bid_both_legs() -> None:
    """The new-bid price_change gives one PriceChange per leg, in array order, own tops/hash."""
    norm = Normalizer(tokens=[YES, NO])
    out = norm.feed(frame("price_change_add"), 1)
    assert out.events == [
        PriceChange(
            asset_id=YES,
            ts="1791201601406",
            side="bid",
            price="0.48",
            size="150",
            best_bid="0.48",
            best_ask="0.49",
            hash="732881584d8c4fa2815d2802827283e0ad841735",
        ),
        PriceChange(
            asset_id=NO,
            ts="1791201601406",
            side="ask",
            price="0.52",
            size="150",
            best_bid="0.51",
            best_ask="0.52",
            hash="81569969e58b081006f7e3dfc967a64cb14028d5",
        ),
    ]
    assert out.quarantine == []
    assert norm.counts == {"frames": 1, "event.price_change": 2}


def test_price_change_cancel_both_legs() -> None:
    """The cancel price_change (NO element first) keeps array order and size 0 as removal."""
    norm = Normalizer(tokens=[YES, NO])
    out = norm.feed(frame("price_change_cancel"), 1)
    assert out.events == [
        PriceChange(
            asset_id=NO,
            ts="1791201602011",
            side="bid",
            price="0.51",
            size="0",
            best_bid="0.49",
            best_ask="0.52",
            hash="12c9791e558e08baa7196b50ac2f86702824c1c0",
        ),
        PriceChange(
            asset_id=YES,
            ts="1791201602011",
            side="ask",
            price="0.49",
            size="0",
            best_bid="0.48",
            best_ask="0.51",
            hash="99724caf4941d4072014b3ce107f80e222f82876",
        ),
    ]
    assert out.quarantine == []
    assert norm.counts == {"frames": 1, "event.price_change": 2}


def test_trade_then_post_trade_book() -> None:
    """The trade and the post-trade book (no tick_size, no last trade price) come out exactly."""
    norm = Normalizer(tokens=[YES, NO])
    trade_text, book_text = frame("trade_then_book").splitlines()
    trade = norm.feed(trade_text, 1)
    assert trade.events == [
        Trade(
            asset_id=YES,
            ts="1791201603550",
            price="0.51",
            size="100",
            side="BUY",
            fee_rate_bps="0",
            tx="0x08f86bebb2737f6a6f0fb23c6f5da2cec255404e4fb440034d6608697a8d41be",
        )
    ]
    book = norm.feed(book_text, 2)
    assert book.events == [
        Book(
            asset_id=YES,
            market=A,
            ts="1791201603561",
            bids=(("0.48", "150"), ("0.47", "310.5"), ("0.46", "850"), ("0.45", "1200")),
            asks=(("0.51", "540"), ("0.52", "900")),
            hash="7efc2f91624a8940f1f836f99eee3692f09e2e8c",
            source="ws",
            tick_size="",
            last_trade_price="",
        )
    ]
    assert trade.quarantine == book.quarantine == []
    assert norm.counts == {"frames": 2, "event.trade": 1, "event.book": 1}


def test_best_bid_ask() -> None:
    """The custom-feature best_bid_ask frame gives one BestBidAsk."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed(frame("best_bid_ask"), 1)
    assert out.events == [
        BestBidAsk(
            asset_id=YES, ts="1791201603561", best_bid="0.48", best_ask="0.51", spread="0.03"
        )
    ]
    assert out.quarantine == []
    assert norm.counts == {"frames": 1, "event.best_bid_ask": 1}


def test_tick_size_change() -> None:
    """The tick_size_change frame (event_type first, market B) gives one TickSizeChange."""
    norm = Normalizer(tokens=[TB])
    out = norm.feed(frame("tick_size_change"), 1)
    assert out.events == [TickSizeChange(asset_id=TB, ts="1791201610007", old="0.01", new="0.001")]
    assert out.quarantine == []
    assert norm.counts == {"frames": 1, "event.tick_size_change": 1}


def test_new_market_is_global() -> None:
    """new_market comes out as a MarketEvent even when no token at all is subscribed."""
    norm = Normalizer(tokens=[])
    out = norm.feed(frame("new_market"), 1)
    assert out.markets == [
        MarketEvent(
            kind="new_market",
            market=C,
            id="2231457",
            asset_ids=(C_YES, C_NO),
            ts="1791201620400",
            question="Will ETH close above $3,200 on October 9?",
            slug="eth-above-3200-on-october-9",
            outcomes=("Yes", "No"),
            winning_asset_id="",
            winning_outcome="",
            tick_size="0.01",
        )
    ]
    assert (out.events, out.quarantine, out.data) == ([], [], True)
    assert norm.counts == {"frames": 1, "event.new_market": 1}


def test_market_resolved_live_shape_is_global() -> None:
    """market_resolved without question/slug and with event_message null is a MarketEvent."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed(frame("market_resolved"), 1)
    assert out.markets == [
        MarketEvent(
            kind="market_resolved",
            market=C,
            id="2231457",
            asset_ids=(C_YES, C_NO),
            ts="1791736000512",
            question="",
            slug="",
            outcomes=(),
            winning_asset_id=C_YES,
            winning_outcome="Yes",
            tick_size="",
        )
    ]
    assert (out.events, out.quarantine) == ([], [])
    assert norm.counts == {"frames": 1, "event.market_resolved": 1}


def test_legacy_price_change() -> None:
    """The pre-2025-09-15 `changes` shape gives PriceChanges with top-level token/hash, no tops."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed(frame("legacy_price_change"), 1)
    assert out.events == [
        PriceChange(
            asset_id=YES,
            ts="1757894400000",
            side="bid",
            price="0.48",
            size="150",
            best_bid="",
            best_ask="",
            hash="662248b483b7ffc050fec94dbca3a0aac36098b2",
        )
    ]
    assert out.quarantine == []
    assert norm.counts == {"frames": 1, "event.price_change": 1}


def test_legacy_flat_price_change() -> None:
    """The 2024 flat shape (price/side/size at top level) gives one PriceChange, canonical."""
    norm = Normalizer(tokens=[YES])
    flat = {
        "asset_id": YES,
        "market": A,
        "price": ".480",
        "side": "SELL",
        "size": "10.0",
        "hash": "h",
        "timestamp": "5",
        "event_type": "price_change",
    }
    assert norm.feed(dumps(flat), 1).events == [
        PriceChange(
            asset_id=YES,
            ts="5",
            side="ask",
            price="0.48",
            size="10",
            best_bid="",
            best_ask="",
            hash="h",
        )
    ]


def test_pong_is_filtered_before_json() -> None:
    """PONG (str, bytes or padded) is counted and flagged as pong, never data nor an event."""
    norm = Normalizer(tokens=[YES])
    for raw in ("PONG", b"PONG", " PONG\n"):
        out = norm.feed(raw, 1)
        assert (out.pong, out.data, out.events, out.markets, out.quarantine) == (
            True,
            False,
            [],
            [],
            [],
        )
    assert norm.counts == {"frames": 3, "filtered.pong": 3}


def test_invalid_operation_is_filtered_and_counted() -> None:
    """INVALID OPERATION is counted, is neither pong nor data, and is not quarantined."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed(b"INVALID OPERATION", 1)
    assert (out.pong, out.data, out.events, out.quarantine) == (False, False, [], [])
    assert norm.counts == {"frames": 1, "filtered.invalid_operation": 1}


# --- filtering --------------------------------------------------------------------------


def test_foreign_leg_is_filtered_and_counted() -> None:
    """Subscribed to YES only, the NO element of a two-leg frame is filtered, YES published."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed(frame("price_change_add"), 1)
    assert out.events == [
        PriceChange(
            asset_id=YES,
            ts="1791201601406",
            side="bid",
            price="0.48",
            size="150",
            best_bid="0.48",
            best_ask="0.49",
            hash="732881584d8c4fa2815d2802827283e0ad841735",
        )
    ]
    assert out.quarantine == []
    assert norm.counts == {"frames": 1, "event.price_change": 1, "filtered.foreign_token": 1}


def test_every_token_event_type_is_filtered_for_foreign_tokens() -> None:
    """Books, trades, tick changes and best_bid_ask of an unsubscribed token are filtered."""
    norm = Normalizer(tokens=[TB])
    frames = [
        frame("initial_snapshot"),
        *frame("trade_then_book").splitlines(),
        frame("best_bid_ask"),
        frame("legacy_price_change"),
    ]
    for i, text in enumerate(frames):
        out = norm.feed(text, i)
        assert (out.events, out.quarantine) == ([], [])
    assert norm.counts == {"frames": 5, "filtered.foreign_token": 6}


def test_subscribe_and_unsubscribe_change_filtering() -> None:
    """A token subscribed later is accepted; an unsubscribed one is filtered again."""
    norm = Normalizer(tokens=[])
    text = frame("best_bid_ask")
    assert norm.feed(text, 1).events == []
    norm.subscribe([YES])
    assert [e.asset_id for e in norm.feed(text.replace('"0.03"', '"0.030"'), 2).events] == [YES]
    norm.unsubscribe([YES])
    assert norm.feed(text.replace('"0.03"', '"0.0300"'), 3).events == []
    assert norm.counts["filtered.foreign_token"] == 2
    assert norm.tokens == set()


def test_subscribe_refuses_a_bad_token_id() -> None:
    """Subscribing something that is not a decimal token id raises InvalidToken."""
    with pytest.raises(InvalidToken):
        Normalizer(tokens=["0xabc"])


# --- books --------------------------------------------------------------------------------


def test_book_levels_sorted_zero_dropped_last_duplicate_wins() -> None:
    """Unordered levels come out best first, size-0 levels dropped, a repeated price's last wins."""
    msg = book_msg(
        bids=[
            {"price": "0.46", "size": "5"},
            {"price": "0.48", "size": "0"},
            {"price": "0.47", "size": "1"},
            {"price": "0.45", "size": "2"},
            {"price": "0.47", "size": "3"},
            {"price": "0.44", "size": "9"},
            {"price": "0.44", "size": "0"},
        ],
        asks=[
            {"price": "0.5", "size": "1"},
            {"price": "0.7", "size": "1"},
            {"price": "0.6", "size": "0"},
            {"price": "0.55", "size": "2"},
        ],
    )
    [book] = Normalizer(tokens=[YES]).feed(dumps(msg), 1).events
    assert book == Book(
        YES,
        A,
        "1",
        (("0.47", "3"), ("0.46", "5"), ("0.45", "2")),
        (("0.5", "1"), ("0.55", "2"), ("0.7", "1")),
        "h",
    )


def test_non_canonical_numbers_are_canonicalised() -> None:
    """`.48`, `0.480`, `1200.0`, `0.010` become `0.48`, `0.48`, `1200`, `0.01` (and 0.50 = 0.5)."""
    msg = book_msg(
        bids=[{"price": ".48", "size": "1200.0"}, {"price": "0.470", "size": "07"}],
        asks=[{"price": "0.50", "size": "1"}, {"price": "0.5", "size": "2.50"}],
        tick_size="0.010",
        last_trade_price="0.480",
    )
    trade = {
        "asset_id": YES,
        "price": "0.510",
        "size": "100.00",
        "side": "BUY",
        "fee_rate_bps": "0.0",
        "timestamp": "2",
        "event_type": "last_trade_price",
    }
    norm = Normalizer(tokens=[YES])
    out = norm.feed(dumps([msg, trade, price_change_msg(change(best_bid=".48", best_ask=""))]), 1)
    assert out.events == [
        Book(
            YES,
            A,
            "1",
            (("0.48", "1200"), ("0.47", "7")),
            (("0.5", "2.5"),),
            "h",
            "ws",
            "0.01",
            "0.48",
        ),
        Trade(YES, "2", "0.51", "100", "BUY", "0", ""),
        PriceChange(YES, "7", "bid", "0.48", "150", "0.48", "", "h"),
    ]


def test_buys_and_sells_are_old_names_for_bids_and_asks() -> None:
    """A book with the old docs' `buys`/`sells` arrays is read like bids/asks."""
    msg = book_msg(buys=[{"price": "0.1", "size": "2"}], sells=[{"price": "0.9", "size": "3"}])
    del msg["bids"], msg["asks"]
    out = Normalizer(tokens=[YES]).feed(dumps(msg), 1)
    assert out.events == [Book(YES, A, "1", (("0.1", "2"),), (("0.9", "3"),), "h")]


def test_book_without_event_type() -> None:
    """An object with bids, asks and asset_id but no event_type is treated as a book."""
    msg = book_msg(bids=[{"price": "0.2", "size": "4"}])
    del msg["event_type"]
    norm = Normalizer(tokens=[YES])
    assert norm.feed(dumps([msg]), 1).events == [Book(YES, A, "1", (("0.2", "4"),), (), "h")]
    assert norm.counts == {"frames": 1, "event.book": 1}


@st.composite
def levels(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Prices on a 0.01 grid in assorted spellings, random order; sizes with zeros, 2 dp."""
    out = []
    for cents, size in draw(
        st.lists(st.tuples(st.integers(1, 99), st.integers(0, 10**6)), max_size=40)
    ):
        price = draw(st.sampled_from([f"0.{cents:02d}", f"0.{cents:02d}0", f".{cents:02d}"]))
        out.append((price, f"{size // 100}.{size % 100:02d}"))
    return out


@given(levels(), levels())
def test_books_always_come_out_sorted_with_the_nonzero_levels(
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
) -> None:
    """For any level order, bids strictly descend, asks strictly ascend, and hold exactly the
    non-zero levels with each price's last size."""

    def raw(side: list[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"price": p, "size": s} for p, s in side]

    def expected(side: list[tuple[str, str]]) -> dict[Decimal, Decimal]:
        last = {Decimal(p): Decimal(s) for p, s in side}
        return {p: s for p, s in last.items() if s}

    [book] = (
        Normalizer(tokens=[YES]).feed(dumps(book_msg(bids=raw(bids), asks=raw(asks))), 1).events
    )
    assert isinstance(book, Book)
    bid_prices = [Decimal(p) for p, _ in book.bids]
    ask_prices = [Decimal(p) for p, _ in book.asks]
    assert all(a > b for a, b in pairwise(bid_prices))
    assert all(a < b for a, b in pairwise(ask_prices))
    assert {Decimal(p): Decimal(s) for p, s in book.bids} == expected(bids)
    assert {Decimal(p): Decimal(s) for p, s in book.asks} == expected(asks)
    for p, s in book.bids + book.asks:
        assert p == format(Decimal(p).normalize(), "f") and s == format(Decimal(s).normalize(), "f")


# --- quarantine ---------------------------------------------------------------------------


def test_malformed_json_quarantines_the_whole_frame() -> None:
    """Text that is not JSON is quarantined verbatim as malformed_json, and still counts as data."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed('{"event_type":"book",', 1)
    assert out.quarantine == [('{"event_type":"book",', "malformed_json")]
    assert (out.events, out.data) == ([], True)
    bad_utf8 = norm.feed(b'{"a":"\xff"}', 2)
    assert bad_utf8.quarantine == [('{"a":"\ufffd"}', "malformed_json")]
    assert norm.counts == {"frames": 2, "quarantine.malformed_json": 2}


def test_unknown_event_type_next_to_a_book() -> None:
    """In one array, a valid book is still emitted and the unknown element alone quarantined."""
    surprise = {"asset_id": YES, "event_type": "surprise", "timestamp": "1"}
    norm = Normalizer(tokens=[YES])
    out = norm.feed(dumps([book_msg(), surprise]), 1)
    assert out.events == [Book(YES, A, "1", (), (), "h")]
    assert out.quarantine == [(dumps(surprise), "unknown_event_type")]
    assert norm.counts == {"frames": 1, "event.book": 1, "quarantine.unknown_event_type": 1}


def test_non_objects_are_quarantined_element_by_element() -> None:
    """A bare JSON value, or an array element that is not an object, is quarantined alone."""
    norm = Normalizer(tokens=[YES])
    assert norm.feed("7", 1).quarantine == [("7", "not_an_object")]
    out = norm.feed(dumps([1, book_msg(), None, ["x"]]), 2)
    assert out.events == [Book(YES, A, "1", (), (), "h")]
    assert out.quarantine == [
        ("1", "not_an_object"),
        ("null", "not_an_object"),
        ('["x"]', "not_an_object"),
    ]
    assert norm.counts["quarantine.not_an_object"] == 4


def test_a_single_object_frame_is_quarantined_as_received() -> None:
    """When the bad element is the whole frame, the quarantine keeps its raw text verbatim."""
    text = '{ "event_type" : "surprise" }'
    assert Normalizer(tokens=[YES]).feed(text, 1).quarantine == [(text, "unknown_event_type")]


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ({"event_type": "last_trade_price", "asset_id": YES, "size": "1"}, "missing_field:price"),
        ({"event_type": "last_trade_price", "asset_id": YES, "price": "0.5"}, "missing_field:size"),
        ({"event_type": "last_trade_price", "price": "0.5", "size": "1"}, "missing_field:asset_id"),
        ({"event_type": "book", "asset_id": YES, "asks": []}, "missing_field:bids"),
        (
            {"event_type": "book", "asset_id": YES, "bids": [{"price": "0.1"}], "asks": []},
            "missing_field:size",
        ),
        (
            {"event_type": "tick_size_change", "asset_id": YES, "old_tick_size": "0.01"},
            "missing_field:new_tick_size",
        ),
        (
            {"event_type": "price_change", "asset_id": YES, "market": A},
            "missing_field:price_changes",
        ),
        ({"event_type": "new_market", "id": "1", "assets_ids": [YES]}, "missing_field:market"),
        ({"event_type": "market_resolved", "id": "1", "assets_ids": [YES]}, "missing_field:market"),
        (
            {"event_type": "last_trade_price", "asset_id": YES, "price": "abc", "size": "1"},
            "bad_number",
        ),
        (
            {"event_type": "last_trade_price", "asset_id": YES, "price": "0.5", "size": ""},
            "bad_number",
        ),
        (
            {
                "event_type": "last_trade_price",
                "asset_id": YES,
                "price": "0.5",
                "size": "1",
                "fee_rate_bps": "x",
            },
            "bad_number",
        ),
        ({"event_type": "best_bid_ask", "asset_id": YES, "best_bid": "NaN"}, "bad_number"),
        (
            {
                "event_type": "book",
                "asset_id": YES,
                "bids": [{"price": "0.1", "size": [1]}],
                "asks": [],
            },
            "bad_number",
        ),
        ({"event_type": "best_bid_ask", "asset_id": YES, "timestamp": "17:00"}, "bad_number"),
        ({"event_type": "best_bid_ask", "asset_id": "0xnope"}, "bad_token"),
        ({"event_type": "best_bid_ask", "asset_id": ""}, "bad_token"),
        ({"event_type": "book", "asset_id": 7043, "bids": [], "asks": []}, "bad_token"),
        ({"event_type": "new_market", "market": C, "assets_ids": ["0x1"]}, "bad_token"),
        ({"event_type": "market_resolved", "market": C, "winning_asset_id": "Yes"}, "bad_token"),
        (
            {
                "event_type": "last_trade_price",
                "asset_id": YES,
                "price": "0.5",
                "size": "1",
                "side": "HOLD",
            },
            "bad_side",
        ),
        (
            {
                "event_type": "price_change",
                "asset_id": YES,
                "changes": [{"price": "0.5", "size": "1", "side": "buy"}],
            },
            "bad_side",
        ),
        ({"event_type": "book", "asset_id": YES, "bids": "none", "asks": []}, "bad_field:bids"),
        ({"event_type": 3, "asset_id": YES}, "unknown_event_type"),
        ({"asset_id": YES, "price": "0.5"}, "unknown_event_type"),
    ],
)
def test_bad_elements_are_quarantined_with_a_reason(element: dict[str, Any], reason: str) -> None:
    """A missing field, bad number, token or side quarantines the element with its reason."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed(dumps([element]), 1)
    assert (out.events, out.markets) == ([], [])
    assert out.quarantine == [(dumps(element), reason)]
    assert norm.counts == {"frames": 1, f"quarantine.{reason.partition(':')[0]}": 1}


def test_one_bad_price_change_element_keeps_its_siblings() -> None:
    """A price_changes element with a bad side or size is quarantined; the others publish."""
    bad_side, bad_size = change(NO, side="HOLD"), change(YES, size="lots")
    msg = price_change_msg(bad_side, change(YES), bad_size, "junk")
    norm = Normalizer(tokens=[YES, NO])
    out = norm.feed(dumps(msg), 1)
    assert out.events == [PriceChange(YES, "7", "bid", "0.48", "150", "0.48", "0.49", "h")]
    assert out.quarantine == [
        (dumps(bad_side), "bad_side"),
        (dumps(bad_size), "bad_number"),
        ('"junk"', "not_an_object"),
    ]


def test_json_numbers_are_read_as_decimals() -> None:
    """Bare JSON numbers (the exchange sends strings) still come out as canonical strings."""
    trade = {
        "asset_id": YES,
        "price": 0.51,
        "size": 100,
        "side": "SELL",
        "timestamp": 3,
        "event_type": "last_trade_price",
        "fee_rate_bps": None,
    }
    assert Normalizer(tokens=[YES]).feed(dumps(trade), 1).events == [
        Trade(YES, "3", "0.51", "100", "SELL", "", "")
    ]


def test_new_market_falls_back_to_clob_token_ids() -> None:
    """A new_market without assets_ids takes its tokens from clob_token_ids."""
    msg = {
        "market": C,
        "id": "9",
        "clob_token_ids": [C_NO, C_YES],
        "timestamp": "4",
        "event_type": "new_market",
    }
    assert Normalizer(tokens=[]).feed(dumps(msg), 1).markets == [
        MarketEvent("new_market", C, "9", (C_NO, C_YES), "4")
    ]


# --- duplicates -------------------------------------------------------------------------


def test_exact_duplicate_frames_are_filtered() -> None:
    """A frame repeated verbatim (a resend) is filtered and counted, so a trade counts once."""
    norm = Normalizer(tokens=[YES])
    trade_text = frame("trade_then_book").splitlines()[0]
    assert len(norm.feed(trade_text, 1).events) == 1
    again = norm.feed(trade_text, 2)
    assert (again.events, again.quarantine, again.data) == ([], [], True)
    assert norm.counts == {"frames": 2, "event.trade": 1, "filtered.duplicate": 1}


def test_same_hash_different_frame_is_not_a_duplicate() -> None:
    """Two frames sharing element hashes but differing in size are both published."""
    norm = Normalizer(tokens=[YES])
    first = norm.feed(dumps(price_change_msg(change(size="150"))), 1)
    second = norm.feed(dumps(price_change_msg(change(size="90"))), 2)
    events = first.events + second.events
    assert [e.size for e in events if isinstance(e, PriceChange)] == ["150", "90"]
    assert len(events) == 2


def test_duplicate_window_is_bounded() -> None:
    """A repeat is filtered within the window but published again once the window has moved on."""
    norm = Normalizer(tokens=[YES])
    text = frame("best_bid_ask")
    assert len(norm.feed(text, 0).events) == 1
    for i in range(DEDUP_WINDOW - 1):
        norm.feed(dumps(price_change_msg(change(size=str(i + 1)))), i)
    assert norm.feed(text, 1).events == []
    norm.feed(dumps(price_change_msg(change(size="0"))), 2)
    assert len(norm.feed(text, 3).events) == 1


def test_control_frames_and_empty_arrays_are_never_duplicates() -> None:
    """Repeated PONG and `[]` frames are what they are, not filtered as duplicates."""
    norm = Normalizer(tokens=[YES])
    for i in range(3):
        assert norm.feed("PONG", i).pong
        assert norm.feed("[]", i).data
    assert norm.counts == {"frames": 6, "filtered.pong": 3}


def test_subscribe_restarts_the_duplicate_window() -> None:
    """After a subscribe, a snapshot identical to one seen before is published (not a resend)."""
    norm = Normalizer(tokens=[YES])
    text = frame("initial_snapshot")
    assert len(norm.feed(text, 1).events) == 1
    norm.subscribe([NO])
    assert len(norm.feed(text, 2).events) == 2
    norm.subscribe([YES])  # nothing new: the window stays
    assert norm.feed(text, 3).events == []


def test_bytes_and_str_frames_normalize_alike() -> None:
    """A frame given as UTF-8 bytes gives the same events as the same frame as str."""
    text = frame("price_change_add")
    assert (
        Normalizer(tokens=[YES, NO]).feed(text.encode(), 1).events
        == Normalizer(tokens=[YES, NO]).feed(text, 1).events
    )

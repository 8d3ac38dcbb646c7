"""feeder/normalize.py against hostile and broken input: the killer frames, then a property.

`Normalizer.feed` is total: whatever the bytes, it returns events and quarantine items and
never raises, and every event it returns is valid by wire/validate.py.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from polybus.feeder.normalize import QUARANTINE_KEPT, QUARANTINE_TEXT_MAX, Normalized, Normalizer
from polybus.wire.validate import check_event, check_market


A = "0xa4c123b1612dd272d1371c17149d439536b3216fdaeeb975729fae923d5a4fd1"
YES = "70431576231964937843803106892715746780871139131450600661571484047788631532544"
NO = "95360841637169588127682974065479463901706979127607889470280694904432390648586"


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def change(**fields: Any) -> dict[str, Any]:
    element = {
        "asset_id": YES,
        "price": "0.48",
        "size": "150",
        "side": "BUY",
        "hash": "h",
        "best_bid": "0.48",
        "best_ask": "0.49",
    }
    element.update(fields)
    return element


def price_change(*elements: Any) -> dict[str, Any]:
    return {
        "market": A,
        "price_changes": list(elements),
        "timestamp": "7",
        "event_type": "price_change",
    }


def trade(**fields: Any) -> dict[str, Any]:
    msg = {
        "asset_id": YES,
        "price": "0.5",
        "size": "10",
        "side": "BUY",
        "fee_rate_bps": "0",
        "timestamp": "3",
        "event_type": "last_trade_price",
        "market": A,
    }
    msg.update(fields)
    return msg


def assert_sound(out: Normalized, norm: Normalizer) -> None:
    """Everything `feed` returned may be published or stored."""
    for event in out.events:
        check_event(event)
    for market in out.markets:
        check_market(market)
    for text, _reason in out.quarantine:
        assert len(text) <= QUARANTINE_TEXT_MAX + 64
        text.encode()  # storable in Redis: no lone surrogates
    assert len(out.quarantine) <= QUARANTINE_KEPT
    assert not any(k.startswith("quarantine.internal_error") for k in norm.counts)


# --- the short killer frames -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ("1e999999999", "bad_number"),  # raised decimal.Overflow
        ("1e999999", "bad_number"),  # became a 1 MB string
        ("1e100", "bad_number"),  # canonicalised past 64 characters
        ("-5", "out_of_range:size"),
        ("1_000", "bad_number"),
        ("١٢", "bad_number"),
        (" 150", "bad_number"),
        ("+5", "out_of_range:size"),
        ("-0", "out_of_range:size"),
        ("1" * 13, "out_of_range:size"),
    ],
)
def test_a_bad_size_costs_only_its_element(size: str, reason: str) -> None:
    """A hostile size quarantines its own price_changes element; its sibling is published."""
    bad = change(size=size)
    norm = Normalizer(tokens=[YES])
    out = norm.feed(dumps(price_change(bad, change(size="90"))), 1)
    assert [e.size for e in out.events] == ["90"]  # type: ignore[union-attr]
    assert out.quarantine == [(dumps(bad), reason)]
    assert_sound(out, norm)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"price": "7"}, "out_of_range:price"),
        ({"price": "1"}, "out_of_range:price"),
        ({"price": "0"}, "out_of_range:price"),
        ({"price": "0.123456789"}, "out_of_range:price"),
        ({"price": "0." + "1" * 40}, "out_of_range:price"),
        ({"price": 0.30000000000000004}, "out_of_range:price"),
        ({"price": "٠.٥"}, "bad_number"),
        ({"price": "0.5 "}, "bad_number"),
        ({"size": 10**19}, "out_of_range:size"),
        ({"size": 1e300}, "bad_number"),
        ({"fee_rate_bps": "20000"}, "out_of_range:fee_rate_bps"),
        ({"timestamp": "1" * 30}, "bad_number"),
        ({"transaction_hash": "0x" + "f" * 300}, "bad_field:transaction_hash"),
    ],
)
def test_bad_trade_fields_are_quarantined_with_their_reason(
    fields: dict[str, Any], reason: str
) -> None:
    """Out-of-range numbers and oversized text quarantine the trade with a precise reason."""
    msg = trade(**fields)
    norm = Normalizer(tokens=[YES])
    out = norm.feed(dumps([msg]), 1)
    assert (out.events, out.quarantine) == ([], [(dumps(msg), reason)])
    assert norm.counts[f"quarantine.{reason.partition(':')[0]}"] == 1


def test_price_seven_size_minus_five_never_reaches_the_stream() -> None:
    """The issue's price_change at price 7 and size -5 is quarantined, not published."""
    bad = change(price="7", size="-5")
    out = Normalizer(tokens=[YES]).feed(dumps(price_change(bad)), 1)
    assert (out.events, out.quarantine) == ([], [(dumps(bad), "out_of_range:price")])


def test_exchange_empty_side_tops_stay_accepted() -> None:
    """best_bid "0" (no bids) and best_ask "1" (no asks) are what the exchange sends: kept."""
    out = Normalizer(tokens=[YES]).feed(dumps(price_change(change(best_bid="0", best_ask="1"))), 1)
    assert [(e.best_bid, e.best_ask) for e in out.events] == [("0", "1")]  # type: ignore[union-attr]


@pytest.mark.parametrize("tick", ["0.0025", "0.005", "0.0001"])
def test_fine_and_odd_ticks_are_valid(tick: str) -> None:
    """Live ticks that are not powers of ten (and the finest) pass as tick sizes."""
    msg = {
        "event_type": "tick_size_change",
        "asset_id": YES,
        "old_tick_size": "0.01",
        "new_tick_size": tick,
        "timestamp": "1",
    }
    [event] = Normalizer(tokens=[YES]).feed(dumps(msg), 1).events
    assert event.new == tick  # type: ignore[union-attr]


@pytest.mark.parametrize("depth", [254, 256, 300, 1000, 1021])
def test_an_element_nested_too_deep_to_write_back_is_quarantined_clipped(depth: int) -> None:
    """orjson reads 1024 levels but writes 255: the element is kept clipped, nothing raises."""
    nested = "[" * depth + "1" + "]" * depth
    text = f'[{{"event_type":"book","asset_id":"{YES}","bids":{nested},"asks":[]}}]'
    norm = Normalizer(tokens=[YES])
    out = norm.feed(text, 1)
    [(kept, reason)] = out.quarantine
    assert reason == "bad_field:bids"
    assert orjson.loads(kept)["asset_id"] == YES  # still JSON, with its identifying fields
    assert_sound(out, norm)


def test_a_frame_nested_past_orjsons_limit_is_malformed_json() -> None:
    """Nesting past 1024 levels is not readable JSON: the frame is quarantined as such."""
    text = "[" * 1100 + "]" * 1100
    out = Normalizer(tokens=[YES]).feed(text, 1)
    assert out.quarantine == [(text, "malformed_json")]


def test_a_megabyte_frame_is_quarantined_clipped() -> None:
    """A 1 MB single-object frame keeps only QUARANTINE_TEXT_MAX characters and says so."""
    msg = trade(transaction_hash="f" * 2**20)
    text = dumps(msg)
    norm = Normalizer(tokens=[YES])
    [(kept, reason)] = norm.feed(text, 1).quarantine
    cut = len(text) - QUARANTINE_TEXT_MAX
    assert (kept, reason) == (
        f"{text[:QUARANTINE_TEXT_MAX]}…[{cut} more characters]",
        "bad_field:transaction_hash",
    )


def test_a_frame_of_many_bad_elements_keeps_a_page_and_counts_all() -> None:
    """500,000 bad elements: each is counted, QUARANTINE_KEPT of them are kept."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed("[" + ",".join(["1"] * 500_000) + "]", 1)
    assert out.quarantine == [("1", "not_an_object")] * QUARANTINE_KEPT
    assert norm.counts["quarantine.not_an_object"] == 500_000
    assert norm.counts["quarantine_not_kept"] == 500_000 - QUARANTINE_KEPT


def test_duplicate_keys_are_judged_by_the_value_json_keeps() -> None:
    """With a key given twice the last value counts, and it is held to the same rules."""
    good = dumps(price_change(change()))
    evil = good.replace('"size":"150"', '"size":"150","size":"-5"')
    norm = Normalizer(tokens=[YES])
    out = norm.feed(evil, 1)
    assert out.events == []
    assert [reason for _, reason in out.quarantine] == ["out_of_range:size"]
    fine = good.replace('"size":"150"', '"size":"-5","size":"150"')
    assert [e.size for e in norm.feed(fine, 2).events] == ["150"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "raw", [b'{"a":"\xff"}', b"\xed\xa0\x80", bytearray(b"\xc3("), memoryview(b"\x80")]
)
def test_non_utf8_bytes_are_malformed_json(raw: Any) -> None:
    """Undecodable bytes (bytes, bytearray or memoryview) are quarantined with U+FFFD."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed(raw, 1)
    assert out.quarantine == [(bytes(raw).decode("utf-8", "replace"), "malformed_json")]


def test_a_text_frame_with_lone_surrogates_is_stored_replaced() -> None:
    """A str frame Redis could not encode (lone surrogates) is quarantined with them replaced."""
    norm = Normalizer(tokens=[YES])
    out = norm.feed('{"a":"\ud800"}', 1)
    assert out.quarantine == [('{"a":"?"}', "malformed_json")]
    escaped = norm.feed('[{"event_type":"book","asset_id":"\\ud800"}]', 2)
    assert [reason for _, reason in escaped.quarantine] == ["malformed_json"]


def test_a_deep_foreign_token_value_is_refused_without_formatting_it() -> None:
    """An asset_id that is a 1000-deep list is a bad_token (no repr of it is ever built)."""
    nested = "[" * 1000 + "]" * 1000
    out = Normalizer(tokens=[YES]).feed(f'[{{"event_type":"book","asset_id":{nested}}}]', 1)
    assert [reason for _, reason in out.quarantine] == ["bad_token"]


def test_dedup_window_keeps_hashes_not_frames() -> None:
    """The duplicate window remembers ints, so 256 huge frames do not stay in memory."""
    norm = Normalizer(tokens=[YES])
    norm.feed(dumps(trade(transaction_hash="x")), 1)
    assert norm.feed(dumps(trade(transaction_hash="x")), 2).events == []
    assert all(isinstance(key, int) for key in norm._recent)


# --- the property -------------------------------------------------------------------------------

HOSTILE_NUMBERS = [
    # not numbers at all, or unbounded
    "1e999999999",
    "1e999999",
    "1e100",
    "1e-100",
    "1_000",
    "١٢",
    "０.５",
    " 0.5",
    "0.5 ",
    "NaN",
    "inf",
    "0x10",
    ".",
    "1" * 65,
    "²",
    "",
    # numbers, but not ones these fields may hold
    "-5",
    "7",
    "1",
    "0",
    "-0",
    "+0.5",
    "-0.5",
    "1.5",
    "2",
    "10001",
    "0.123456789",
    "0.000000001",
    "9" * 40,
    "0." + "1" * 40,
    "1" * 13,
]
DEEP = {f"<deep {d}>": "[" * d + "1" + "]" * d for d in (3, 256, 300, 1000)}
HUGE = "<huge>"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(HOSTILE_NUMBERS),
    st.text(max_size=8),
    st.sampled_from([*DEEP, HUGE]),
)
garbage = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
prices = st.sampled_from(["0.48", ".5", "0.0025", "0.9975", "0.0001", "0.480"])
sizes = st.sampled_from(["0", "150", "1200.0", "275.25", "0.000001"])
tokens = st.sampled_from([YES, NO, "12345"])
NUMERIC = {
    "price",
    "size",
    "best_bid",
    "best_ask",
    "tick_size",
    "last_trade_price",
    "spread",
    "old_tick_size",
    "new_tick_size",
    "fee_rate_bps",
    "order_price_min_tick_size",
    "timestamp",
}


def fields(**valid: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(valid)


levels = st.lists(fields(price=prices, size=sizes), min_size=1, max_size=4)
common = {"asset_id": tokens, "market": st.just(A), "timestamp": st.just("1791201600123")}
valid_elements = st.one_of(
    fields(
        event_type=st.just("book"),
        bids=levels,
        asks=levels,
        hash=st.just("h"),
        tick_size=prices,
        last_trade_price=prices,
        **common,
    ),
    fields(
        event_type=st.just("price_change"),
        market=st.just(A),
        timestamp=st.just("5"),
        price_changes=st.lists(
            fields(
                asset_id=tokens,
                price=prices,
                size=sizes,
                side=st.sampled_from(["BUY", "SELL"]),
                best_bid=prices,
                best_ask=prices,
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    fields(
        event_type=st.just("price_change"),
        changes=st.lists(
            fields(price=prices, size=sizes, side=st.just("BUY")), min_size=1, max_size=2
        ),
        hash=st.just("h"),
        **common,
    ),
    fields(
        event_type=st.just("last_trade_price"),
        price=prices,
        size=sizes,
        side=st.sampled_from(["BUY", "SELL"]),
        fee_rate_bps=st.just("0"),
        transaction_hash=st.just("0xab"),
        **common,
    ),
    fields(
        event_type=st.just("tick_size_change"), old_tick_size=prices, new_tick_size=prices, **common
    ),
    fields(
        event_type=st.just("best_bid_ask"),
        best_bid=prices,
        best_ask=prices,
        spread=st.just("0.01"),
        **common,
    ),
    fields(
        event_type=st.just("new_market"),
        market=st.just(A),
        id=st.just("1"),
        assets_ids=st.lists(tokens, max_size=2),
        outcomes=st.just(["Yes", "No"]),
        question=st.just("Q?"),
        order_price_min_tick_size=prices,
        timestamp=st.just("1"),
    ),
    fields(
        event_type=st.just("market_resolved"),
        market=st.just(A),
        assets_ids=st.lists(tokens),
        winning_asset_id=tokens,
        winning_outcome=st.just("Yes"),
        timestamp=st.just("1"),
    ),
)
"""Every event type with every field present and valid."""


def slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a drawn element, to pick the ones to break."""
    out: list[tuple[Any, Any]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        out.append((value, key))
        if isinstance(child, dict | list):
            out += slots(child)
    return out


@st.composite
def broken_elements(draw: st.DrawFn) -> Any:
    """A valid element of any type with one to three fields broken — a number field most
    often (so a bad number meets its rule behind a valid type and token), else any field
    replaced by garbage or deleted — or, now and then, garbage outright."""
    if draw(st.integers(0, 9)) == 0:
        return draw(garbage)
    value = orjson.loads(dumps(draw(valid_elements)))  # a copy: st.just values are shared
    for _ in range(draw(st.integers(1, 3))):
        where = slots(value)
        numeric = [(c, k) for c, k in where if k in NUMERIC]
        container, key = draw(
            st.sampled_from(numeric if numeric and draw(st.booleans()) else where)
        )
        how = draw(st.sampled_from(["hostile", "hostile", "garbage", "delete"]))
        if how == "delete" and isinstance(container, dict):
            del container[key]
        else:
            container[key] = draw(st.sampled_from(HOSTILE_NUMBERS) if how == "hostile" else garbage)
    return value


elements = broken_elements()


def render(value: Any, duplicate: bool) -> str:
    """JSON text of a drawn frame, with deep nesting and megabyte strings spliced in (orjson
    cannot write them), and optionally one key given twice with a hostile last value."""
    text = dumps(value)
    for marker, nested in DEEP.items():
        text = text.replace(dumps(marker), nested)
    text = text.replace(dumps(HUGE), dumps("9" * 2**20))
    if duplicate and '":"' in text:
        key_end = text.index('":"')
        key_start = text.rindex('"', 0, key_end) + 1
        value_end = text.index('"', key_end + 3) + 1
        text = f'{text[:value_end]},"{text[key_start:key_end]}":"-5"{text[value_end:]}'
    return text


@st.composite
def frames(draw: st.DrawFn) -> bytes | str:
    """A frame: one element or an array of them, as text or bytes, perhaps byte-damaged."""
    value = draw(st.one_of(elements, st.lists(elements, min_size=1, max_size=6)))
    text = render(value, draw(st.booleans()))
    raw = text.encode()
    damage = draw(st.sampled_from(["none", "none", "cut", "bytes", "surrogate", "str"]))
    if damage == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif damage == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = (
            raw[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
            + raw[at:]
        )
    elif damage == "surrogate":
        return text[: len(text) // 2] + "\udc80" + text[len(text) // 2 :]
    elif damage == "str":
        return text
    return raw


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(frames(), min_size=1, max_size=3))
def test_feed_is_total_and_publishes_only_valid_events(raws: list[bytes | str]) -> None:
    """For structured garbage feed never raises, and all it returns is valid and storable."""
    norm = Normalizer(tokens=[YES, NO, "12345"])
    for i, raw in enumerate(raws):
        out = norm.feed(raw, i)
        assert_sound(out, norm)


@settings(max_examples=200, deadline=None)
@given(valid_elements)
def test_the_propertys_valid_side_makes_real_events(element: dict[str, Any]) -> None:
    """Unbroken, every drawn element publishes (so the property is not vacuous)."""
    norm = Normalizer(tokens=[YES, NO, "12345"])
    out = norm.feed(dumps(element), 1)
    assert out.quarantine == []
    assert len(out.events) + len(out.markets) >= 1
    assert_sound(out, norm)

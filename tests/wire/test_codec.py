"""The stream codec: flat string fields, a schema version, identity round trips."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, strategies as st

from polybus.wire import validate
from polybus.wire.codec import (
    SCHEMA_VERSION,
    _decode_fields,
    decode,
    decode_change,
    decode_market,
    encode,
    encode_market,
    text_fields,
)
from polybus.wire.errors import DecodeError
from polybus.wire.events import (
    BestBidAsk,
    Book,
    Entry,
    MarketEvent,
    PriceChange,
    Status,
    TickSizeChange,
    Trade,
)


T = "123456789"


def canonical(d: Decimal) -> str:
    return format(d.normalize(), "f") if d else "0"


# Every field drawn from its valid domain (wire/validate.py): decode refuses the rest.
nums = st.decimals(min_value=0, max_value=10000, places=3, allow_nan=False).map(canonical)
prices = st.decimals(
    min_value=Decimal("0.0001"), max_value=Decimal("0.9999"), places=4, allow_nan=False
).map(canonical)
tops = st.one_of(st.sampled_from(["", "0", "1"]), prices)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
stamps = st.one_of(st.just(""), st.integers(0, 10**15).map(str))
levels = st.lists(st.tuples(prices, nums), max_size=5).map(tuple)
events = st.one_of(
    st.builds(
        Book,
        asset_id=st.just(T),
        market=text,
        ts=stamps,
        bids=levels,
        asks=levels,
        hash=text,
        source=st.sampled_from(["ws", "rest"]),
        tick_size=prices,
        last_trade_price=tops,
    ),
    st.builds(
        PriceChange,
        asset_id=st.just(T),
        ts=stamps,
        side=st.sampled_from(["bid", "ask"]),
        price=prices,
        size=nums,
        best_bid=tops,
        best_ask=tops,
        hash=text,
    ),
    st.builds(
        Trade,
        asset_id=st.just(T),
        ts=stamps,
        price=prices,
        size=nums,
        side=st.sampled_from(["BUY", "SELL"]),
        fee_rate_bps=nums,
        tx=text,
    ),
    st.builds(TickSizeChange, asset_id=st.just(T), ts=stamps, old=prices, new=prices),
    st.builds(
        BestBidAsk, asset_id=st.just(T), ts=stamps, best_bid=tops, best_ask=tops, spread=tops
    ),
    st.builds(
        Status,
        asset_id=st.just(T),
        state=st.sampled_from(["connected", "disconnected"]),
        reason=text,
        ts=st.just(""),
    ),
)


@given(events, st.integers(1, 2**40), st.integers(0, 2**31), st.integers(0, 2**62))
def test_encode_then_decode_is_identity(event, seq, epoch, rx) -> None:
    """decode(encode(entry)) gives back the same entry, for every event type."""
    entry = Entry(event=event, seq=seq, epoch=epoch, rx=rx)
    fields = encode(entry)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    assert decode(fields, T) == entry
    as_bytes = {k.encode(): v.encode() for k, v in fields.items()}
    assert decode(as_bytes, T, b"1-0") == Entry(event, seq, epoch, rx, id="1-0")


def test_encoded_fields_are_flat_and_readable() -> None:
    """A price_change entry is exactly the contract's flat fields, seq after type."""
    event = PriceChange(T, "1791201601406", "bid", "0.48", "150", "0.48", "0.49", "abc")
    fields = encode(Entry(event, seq=7, epoch=2, rx=99))
    assert list(fields.items()) == [
        ("type", "price_change"),
        ("seq", "7"),
        ("epoch", "2"),
        ("ts", "1791201601406"),
        ("rx", "99"),
        ("v", SCHEMA_VERSION),
        ("side", "bid"),
        ("price", "0.48"),
        ("size", "150"),
        ("best_bid", "0.48"),
        ("best_ask", "0.49"),
        ("hash", "abc"),
    ]


def test_book_levels_travel_as_json_best_first() -> None:
    """Book levels are JSON arrays of [price, size] string pairs in the order given."""
    book = Book(T, "0xm", "5", (("0.47", "310.5"), ("0.46", "850")), (("0.49", "275.25"),), "h")
    fields = encode(Entry(book, 1, 1, 1))
    assert fields["bids"] == '[["0.47","310.5"],["0.46","850"]]'
    assert fields["asks"] == '[["0.49","275.25"]]'
    assert "tick_size" not in fields


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seq": "1", "epoch": "1", "rx": "1"}, "lacks field 'type'"),
        ({"type": "nope", "seq": "1", "epoch": "1", "rx": "1"}, "unknown entry type"),
        (
            {"type": "status", "seq": "x", "epoch": "1", "rx": "1", "state": "connected"},
            "not an integer",
        ),
        (
            {"type": "status", "seq": "1", "epoch": "1", "rx": "1", "v": "9", "state": "s"},
            "version",
        ),
        (
            {"type": "book", "seq": "1", "epoch": "1", "rx": "1", "bids": "[1]", "asks": "[]"},
            "bad level",
        ),
        (
            {
                "type": "price_change",
                "seq": "1",
                "epoch": "1",
                "rx": "1",
                "side": "BUY",
                "price": "1",
                "size": "1",
            },
            "side must be",
        ),
        (
            {"type": "trade", "seq": "1", "epoch": "1", "rx": "1", "price": "0.5"},
            "lacks field 'size'",
        ),
    ],
)
def test_bad_entries_raise_clear_decode_errors(fields: dict[str, str], message: str) -> None:
    """Bad input raises DecodeError naming what is wrong."""
    with pytest.raises(DecodeError, match=message):
        decode(fields, T)


def test_market_events_round_trip() -> None:
    """Lifecycle events encode to flat fields and decode back unchanged."""
    event = MarketEvent(
        "market_resolved", "0xc", "22", ("1", "2"), "5", winning_asset_id="1", winning_outcome="Yes"
    )
    assert decode_market(encode_market(event, rx=3)) == event


def entry_fields(**fields: str) -> dict[str, str]:
    """A valid price_change entry's fields, with `fields` overriding."""
    base = {
        "type": "price_change",
        "seq": "1",
        "epoch": "1",
        "ts": "5",
        "rx": "1",
        "v": "1",
        "side": "bid",
        "price": "0.48",
        "size": "150",
        "best_bid": "0.48",
        "best_ask": "0.49",
        "hash": "h",
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    "fields",
    [
        entry_fields(price="7"),
        entry_fields(size="-5"),
        entry_fields(price="0"),
        entry_fields(price="1_000"),
        entry_fields(size="1_000"),
        entry_fields(size="١٢"),
        entry_fields(price=" 0.5"),
        entry_fields(size="1e999999"),
        entry_fields(size="1e100"),
        entry_fields(price="0." + "1" * 40),
        entry_fields(best_bid="2"),
        entry_fields(best_ask="-1"),
        entry_fields(size="+5"),
        entry_fields(ts="17:00"),
        entry_fields(seq="1_0"),
        entry_fields(seq="٣"),
        entry_fields(rx=" 1"),
        entry_fields(epoch="-1"),
        entry_fields(hash="h" * 300),
        {"type": "book", "seq": "1", "epoch": "1", "rx": "1", "bids": '[["7","1"]]', "asks": "[]"},
        {
            "type": "book",
            "seq": "1",
            "epoch": "1",
            "rx": "1",
            "bids": '[["0.5","-1"]]',
            "asks": "[]",
        },
        {
            "type": "book",
            "seq": "1",
            "epoch": "1",
            "rx": "1",
            "bids": "[]",
            "asks": "[]",
            "source": "x",
        },
        {
            "type": "book",
            "seq": "1",
            "epoch": "1",
            "rx": "1",
            "bids": "[]",
            "asks": "[]",
            "tick_size": "1",
        },
        {
            "type": "trade",
            "seq": "1",
            "epoch": "1",
            "rx": "1",
            "price": "0.5",
            "size": "1",
            "fee_rate_bps": "99999",
        },
        {
            "type": "trade",
            "seq": "1",
            "epoch": "1",
            "rx": "1",
            "price": "0.5",
            "size": "1",
            "side": "HOLD",
        },
        {"type": "tick_size_change", "seq": "1", "epoch": "1", "rx": "1", "new": "0"},
        {"type": "best_bid_ask", "seq": "1", "epoch": "1", "rx": "1", "spread": "5"},
        {"type": "status", "seq": "1", "epoch": "1", "rx": "1", "state": "weird"},
    ],
)
def test_decode_refuses_what_the_normalizer_would_quarantine(fields: dict[str, str]) -> None:
    """Entries breaking wire/validate.py's rules raise DecodeError instead of being served."""
    with pytest.raises(DecodeError):
        decode(fields, T)


def test_decode_refuses_deeply_nested_levels_with_decode_error() -> None:
    """Levels nested deeper than orjson writes (and reads) raise DecodeError, nothing else."""
    for depth in (300, 1100):
        fields = {
            "type": "book",
            "seq": "1",
            "epoch": "1",
            "rx": "1",
            "asks": "[]",
            "bids": "[" + "[" * depth + "]" * depth + "]",
        }
        with pytest.raises(DecodeError):
            decode(fields, T)


def test_decode_refuses_non_utf8_bytes_with_decode_error() -> None:
    """A field redis returns as bytes that are not UTF-8 is a DecodeError, not a UnicodeError."""
    fields = {k.encode(): v.encode() for k, v in entry_fields().items()}
    fields[b"hash"] = b"\xff\xfe"
    with pytest.raises(DecodeError, match="not UTF-8"):
        decode(fields, T)


def test_decode_accepts_the_exchange_empty_side_tops_and_canonicalises() -> None:
    """best_bid 0 / best_ask 1 (no bids, no asks) decode; an odd valid spelling comes out
    canonical."""
    entry = decode(entry_fields(price=".480", size="150.0", best_bid="0", best_ask="1"), T)
    assert entry.event == PriceChange(T, "5", "bid", "0.48", "150", "0", "1", "h")


def test_decode_market_refuses_bad_tokens_and_ticks() -> None:
    """A lifecycle entry with a non-decimal token id or a tick of 1 is a DecodeError."""
    good = encode_market(MarketEvent("new_market", "0xc", "1", ("1",), "5", tick_size="0.01"), rx=1)
    assert decode_market(good).tick_size == "0.01"
    for bad in ({**good, "asset_ids": '["0x1"]'}, {**good, "tick_size": "1"}):
        with pytest.raises(DecodeError):
            decode_market(bad)


HOSTILE = [
    "7",
    "-5",
    "0.5",
    "0",
    "1",
    "",
    "1_000",
    "١٢",
    " 1",
    "1e999999999",
    "1e100",
    "NaN",
    "connected",
    "weird",
    "bid",
    "BUY",
    "ws",
    "[]",
    '[["0.5","1"]]',
    '[["7","-1"]]',
    "[" * 300 + "]" * 300,
    '[["0.5"]]',
    "{}",
    "x" * 300,
    "18446744073709551616",
]
values = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=6))
damageable = st.sampled_from(
    [
        "type",
        "seq",
        "epoch",
        "rx",
        "ts",
        "v",
        "bids",
        "asks",
        "tick_size",
        "last_trade_price",
        "source",
        "hash",
        "market",
        "side",
        "price",
        "size",
        "best_bid",
        "best_ask",
        "fee_rate_bps",
        "tx",
        "old",
        "new",
        "spread",
        "state",
        "reason",
    ]
)


@given(
    events,
    st.dictionaries(damageable, values, max_size=3),
    st.booleans(),
    st.sampled_from([b"", b"\xff", b"\xc3("]),
)
def test_decode_is_total_raising_only_decode_error(
    event: Any, damage: dict[str, str], as_bytes: bool, junk: bytes
) -> None:
    """A valid entry with up to three fields overwritten by garbage decodes to valid numbers
    (the damage was harmless) or raises DecodeError — never anything else."""
    fields: dict[Any, Any] = {**encode(Entry(event, 1, 1, 1)), **damage}
    if as_bytes:
        fields = {
            k.encode(): v.encode() + (junk if k == "hash" else b"") for k, v in fields.items()
        }
    try:
        entry = decode(fields, T)
    except DecodeError:
        return
    decoded = entry.event
    if isinstance(decoded, Book):  # decode checks each level, not their order (books sort)
        for price, size in decoded.bids + decoded.asks:
            assert validate.price(price) == price and validate.size(size) == size
        decoded = Book(
            T,
            decoded.market,
            decoded.ts,
            (),
            (),
            decoded.hash,
            decoded.source,
            decoded.tick_size,
            decoded.last_trade_price,
        )
    validate.check_event(decoded)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({b"type": b"trade", b"price": b"0.5"}, {"type": "trade", "price": "0.5"}),
        ({"type": "trade", "price": "0.5"}, {"type": "trade", "price": "0.5"}),
        ({b"type": "trade", "price": b"0.5"}, {"type": "trade", "price": "0.5"}),
        ({}, {}),
    ],
)
def test_text_fields_take_bytes_str_or_both(
    fields: dict[Any, Any], expected: dict[str, str]
) -> None:
    """Stream fields come back as text whether the client decoded them or not."""
    assert text_fields(fields) == expected


@pytest.mark.parametrize(
    "fields",
    [{b"type": b"\xff"}, {b"\xfe": b"x"}, {b"type": 5}, {7: b"x"}],
)
def test_text_fields_refuse_what_is_not_text(fields: dict[Any, Any]) -> None:
    """A name or value that is not UTF-8 text is a DecodeError, never a crash."""
    with pytest.raises(DecodeError):
        text_fields(fields)


# --- the hot path: decode_change against the full decode -----------------------------------

price_changes = st.builds(
    PriceChange,
    asset_id=st.just(T),
    ts=stamps,
    side=st.sampled_from(["bid", "ask"]),
    price=st.one_of(prices, st.sampled_from(["0.50", ".5", "0.5000"])),
    size=st.one_of(nums, st.sampled_from(["1200.0", "007", "0"])),
    best_bid=tops,
    best_ask=tops,
    hash=text,
)
change_damage = st.dictionaries(
    st.sampled_from(["type", "seq", "epoch", "rx", "ts", "v", "side", "price", "size"])
    | st.sampled_from(["best_bid", "best_ask", "hash", "writer", "extra"]),
    values,
    max_size=3,
)


def _raw(fields: dict[str, str], junk: bytes) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() + (junk if k == "hash" else b"") for k, v in fields.items()}


def _flat(fields: dict[Any, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def _as_change(entry: Entry) -> tuple[Any, ...]:
    e = entry.event
    assert isinstance(e, PriceChange)
    fields = (e.ts, e.side, e.price, e.size, e.best_bid, e.best_ask, e.hash, entry.writer)
    return (entry.seq, entry.epoch, entry.rx, *fields)


@given(price_changes, st.integers(1, 2**40), st.integers(0, 2**31), st.integers(0, 2**62))
def test_decode_change_takes_a_price_change_as_consumers_read_it(
    event: PriceChange, seq: int, epoch: int, rx: int
) -> None:
    """A price_change read undecoded — a dict of bytes, or the flat list the server sends in
    the feeder's field order — is taken by the hot path with exactly the full decode's values."""
    fields = _raw(encode(Entry(event, seq, epoch, rx)), b"")
    expected = _as_change(_decode_fields(fields, T, "1-0"))
    assert decode_change(fields) == expected
    assert decode_change(_flat(fields)) == expected
    assert decode(fields, T, "1-0") == _decode_fields(fields, T, "1-0")


@given(
    price_changes,
    change_damage,
    st.sampled_from([b"", b"\xff", b"\xc3("]),
    st.booleans(),
    st.sampled_from(["", "seq", "price", "hash", "ts"]),
)
def test_decode_change_declines_all_the_full_decode_refuses(
    event: PriceChange, damage: dict[str, str], junk: bytes, flat: bool, as_str: str
) -> None:
    """With garbage in up to three fields (or one value left a str, or bytes that are not
    UTF-8), the hot path gives the full decode's values or declines (None) — never a value
    the full decode would refuse or decode otherwise."""
    fields: dict[Any, Any] = _raw({**encode(Entry(event, 3, 1, 5)), **damage}, junk)
    if as_str and as_str.encode() in fields:
        fields[as_str.encode()] = fields[as_str.encode()].decode("utf-8", "replace")
    got = decode_change(_flat(fields) if flat else fields)
    try:
        entry = _decode_fields(fields, T, "1-0")
    except DecodeError:
        assert got is None
        return
    if got is not None:
        assert _as_change(entry) == got


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"seq", b"1_000"),
        (b"seq", b" 5"),
        (b"seq", "٣".encode()),
        (b"epoch", b"+5"),
        (b"epoch", b""),
        (b"rx", b"12345678901234567890"),
        (b"ts", b"12a"),
        (b"ts", b"1" * 21),
        (b"hash", b"x" * 257),
        (b"hash", b"\xff"),
        (b"writer", b"x" * 257),
        (b"v", b"2"),
        (b"side", b"BUY"),
        (b"price", b"7"),
        (b"price", b"0.123456789"),
        (b"size", b"-5"),
        (b"best_bid", b"1.5"),
        (b"best_ask", b"\xc3("),
        (b"extra", b"\xff"),
    ],
)
def test_decode_change_declines_each_thing_the_full_decode_refuses(
    name: bytes, value: bytes
) -> None:
    """Each rule of the full decode holds on the hot path too: one bad field, by name or as
    sent, and decode_change declines while decode refuses it."""
    fields = {
        **_raw(encode(Entry(PriceChange(T, "1", "bid", "0.5", "2", "", "", "h"), 3, 1, 5)), b""),
        name: value,
    }
    assert decode_change(fields) is None
    assert decode_change(_flat(fields)) is None
    with pytest.raises(DecodeError):
        decode(fields, T)

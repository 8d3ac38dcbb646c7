"""The hash codec (wire/hashes.py): the book hash strictly and leniently, the health hash."""

from __future__ import annotations

import pytest

from polybus.wire import hashes
from polybus.wire.errors import DecodeError
from polybus.wire.hashes import BookHash, ConnectionHealth, FeederHealth


T = "1001"
FULL = {
    b"asset_id": b"1001",
    b"market": b"0xm",
    b"tick_size": b"0.01",
    b"hash": b"h2",
    b"ts": b"102",
    b"best_bid": b"0.48",
    b"best_ask": b"0.51",
    b"status": b"synced",
    b"bid:0.47": b"310.5",
    b"bid:0.48": b"150",
    b"ask:0.51": b"640",
    b"ask:0.6": b"1",
    b"last_trade_price": b"0.51",
    b"last_trade_size": b"100",
    b"last_trade_side": b"BUY",
    b"last_id": b"5-0",
    b"seq": b"5",
    b"epoch": b"1",
    b"writer": b"f1",
    b"lease": b"99",
}


def test_decode_book_reads_a_feeder_written_hash() -> None:
    """Every field lands in its place; levels come out best first."""
    assert hashes.decode_book(T, FULL) == BookHash(
        asset_id=T,
        market="0xm",
        tick_size="0.01",
        hash="h2",
        ts="102",
        best_bid="0.48",
        best_ask="0.51",
        last_trade_price="0.51",
        last_trade_size="100",
        last_trade_side="BUY",
        status="synced",
        last_id="5-0",
        seq=5,
        epoch="1",
        writer="f1",
        lease="99",
        bids=(("0.48", "150"), ("0.47", "310.5")),
        asks=(("0.51", "640"), ("0.6", "1")),
    )


def test_decode_book_defaults_and_empty() -> None:
    """An empty hash is None; a hash without status or seq is pending at an unknown seq."""
    assert hashes.decode_book(T, {}) is None
    assert hashes.decode_book(T, {"market": "0xm"}) == BookHash(market="0xm", status="pending")


@pytest.mark.parametrize(
    "garbage",
    [
        {"seq": "abc", "last_id": "1-0"},
        {"seq": "1"},
        {"status": "weird"},
        {"last_id": "x", "seq": "1"},
        {"bid:zz": "1"},
        {"bid:0.4": "-5"},
        {"last_trade_price": "1e99999999"},
        {b"bid:0.3\xff": b"1"},
    ],
)
def test_decode_book_refuses_garbage(garbage: dict) -> None:
    """Anything a consumer could not serve raises DecodeError, never something else."""
    with pytest.raises(DecodeError):
        hashes.decode_book(T, garbage)


def test_read_book_shows_what_it_can() -> None:
    """Tools' reading: garbage levels, tops and seq are left out, bad UTF-8 replaced."""
    got = hashes.read_book(
        {
            b"bid:zz": b"1",
            b"bid:0.4": b"5",
            b"ask:0.6": b"x",
            b"best_bid": b"nan",
            b"seq": b"7a",
            b"status": b"\xffok",
            b"question": None,
        }
    )
    assert got == BookHash(status="\ufffdok", bids=(("0.4", "5"),), asks=(("0.6", "x"),))
    summary = ["Q", None, "0.4", "0.6", "", "9", "synced", "12", "a", "3"]
    assert hashes.read_book(dict(zip(hashes.SUMMARY_FIELDS, summary, strict=True))) == BookHash(
        question="Q",
        best_bid="0.4",
        best_ask="0.6",
        ts="9",
        status="synced",
        seq=12,
        writer="a",
        fence="3",
    )


def test_seq_meta_and_replay_start() -> None:
    """seq values, the describing fields and a recorded hash made a replay's start."""
    assert hashes.decode_seq(None) is None and hashes.decode_seq(b"42") == 42
    with pytest.raises(DecodeError):
        hashes.decode_seq(b"4x")
    assert hashes.book_meta(question="Will it?", outcome="") == {"question": "Will it?"}
    assert hashes.replay_start(
        {"seq": "9", "last_id": "9-1", "writer": "f", "lease": "1", "bid:0.4": "1"}
    ) == {"seq": "9", "last_id": "0-0", "bid:0.4": "1"}


HEALTH = FeederHealth(
    state="ok",
    redis="ok",
    version="1.0",
    pid=42,
    started="1700000000000",
    tokens=2,
    synced=2,
    connections=(ConnectionHealth(id=0, state="subscribed", epoch=3, tokens=2, silence_s=0.5),),
    last_frame_age_ms=500,
    published=10,
    updated_ms=1700000001000,
    interval_ms=2000,
    ws_url="ws://x",
    partitions=16,
    lease_ms=3000,
    led=frozenset({0, 3, 7}),
    carrying=frozenset({0, 3, 7, 12}),
    warm=frozenset({0, 3}),
)
HEALTH_FIELDS = {
    "state": "ok",
    "redis": "ok",
    "redis_error": "",
    "version": "1.0",
    "pid": "42",
    "started": "1700000000000",
    "tokens": "2",
    "synced": "2",
    "connections": '[{"id":0,"state":"subscribed","epoch":3,"tokens":2,"silence_s":0.5,'
    '"reconnects":0,"resubscribes":0,"last_reason":""}]',
    "last_frame_age_ms": "500",
    "published": "10",
    "updated_ms": "1700000001000",
    "interval_ms": "2000",
    "ws_url": "ws://x",
    "partitions": "16",
    "lease_ms": "3000",
    "led": "0,3,7",
    "carrying": "0,3,7,12",
    "warm": "0,3",
}


def test_health_round_trip() -> None:
    """encode_health writes exactly these fields; decode_health reads them back."""
    assert hashes.encode_health(HEALTH) == HEALTH_FIELDS
    assert list(hashes.encode_health(HEALTH)) == list(HEALTH_FIELDS)
    assert (
        hashes.decode_health({k.encode(): v.encode() for k, v in HEALTH_FIELDS.items()}) == HEALTH
    )


def test_health_garbage_reads_as_defaults() -> None:
    """Garbage numbers, garbage connections and unknown fields never raise."""
    got = hashes.decode_health(
        {
            "tokens": "x",
            "interval_ms": "-1",
            "connections": '[1, {"id":"a","state":"subscribed","silence_s":true}]',
            "new_field": "v",
            "started": b"\xff",
        }
    )
    assert got == FeederHealth(
        connections=(ConnectionHealth(state="subscribed"),), started="\ufffd"
    )
    assert got.extra == {"new_field": "v"}
    assert hashes.decode_health({"connections": "{not json"}).connections == ()
    assert hashes.health_report(got)["connections"] == [
        {
            "id": 0,
            "state": "subscribed",
            "epoch": 0,
            "tokens": 0,
            "silence_s": 0.0,
            "reconnects": 0,
            "resubscribes": 0,
            "last_reason": "",
        }
    ]
    assert hashes.health_report(got)["new_field"] == "v"
    assert hashes.decode_run(b"\xff") == "" and hashes.decode_run(None) == ""
    assert hashes.decode_run(b"17") == "17"


def test_health_partition_fields_read_leniently() -> None:
    """The redundant feeders' fields: an older feeder's hash reads as no partitions, garbage
    items of a partition list are left out, and the lists are written sorted."""
    assert hashes.decode_health({"state": "ok"}) == FeederHealth(state="ok")
    got = hashes.decode_health(
        {
            "led": "3,x,,1,-2,999999999",
            "warm": b"\xff",
            "carrying": "",
            "partitions": "sixteen",
            "lease_ms": "300",
        }
    )
    assert (got.led, got.warm, got.carrying) == (frozenset({1, 3}), frozenset(), frozenset())
    assert (got.partitions, got.lease_ms) == (0, 300)
    assert hashes.encode_partition_set(frozenset({10, 2, 0})) == "0,2,10"
    assert hashes.decode_partition_set(None) == frozenset()

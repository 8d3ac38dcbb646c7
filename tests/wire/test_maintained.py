"""The one rule that says whether a book is maintained (wire/maintained.py)."""

from __future__ import annotations

from polybus.wire.maintained import (
    HANDOVER,
    MAINTAINED,
    UNKNOWN,
    UNMAINTAINED,
    judge,
    partition_count,
    read_lease,
)
from polybus.wire.partitions import Lease


BOOK = {"status": "synced", "writer": "a", "fence": "1"}


def test_the_writer_holding_its_partitions_lease_maintains_the_book() -> None:
    """A live lease whose holder is the hash's writer: maintained, whatever the bytes type."""
    v = judge({b"writer": b"a", b"fence": b"1"}, partitions=b"16", partition=3, lease=b"1:a")
    assert (v.state, v.live, v.lease) == (MAINTAINED, True, Lease(1, "a"))
    assert v.reason == "writer a holds lease p3 fence 1"


def test_another_holder_is_a_hand_over_in_progress() -> None:
    """A live lease held by someone else: a hand-over, still live, and the reason says so."""
    v = judge(BOOK, partitions="16", partition=3, lease="2:b")
    assert (v.state, v.live, v.writer) == (HANDOVER, True, "a")
    assert "hand-over in progress: b holds lease p3 fence 2" in v.reason
    assert "last written by a fence 1" in v.reason
    assert judge({}, partitions="16", partition=0, lease="2:b").state == HANDOVER


def test_no_live_lease_means_nobody_maintains_the_book() -> None:
    """No lease key (expired, never taken) on a partitioned prefix: unmaintained."""
    v = judge(BOOK, partitions="16", partition=3, lease=None)
    assert (v.state, v.live) == (UNMAINTAINED, False)
    assert v.reason == "no live lease on p3: nobody may write this book"


def test_garbage_reads_as_no_lease_with_the_reason() -> None:
    """A lease or partition count nobody could have written: unmaintained, never a crash."""
    for lease in ("a", "x:a", "1:", b"\xff", 7):
        v = judge(BOOK, partitions="16", partition=3, lease=lease)
        assert v.state == UNMAINTAINED and "garbage" in v.reason, lease
    for count in ("0", "x", "-1", b"\xff", "123456789", 4.5):
        v = judge(BOOK, partitions=count, partition=3, lease="1:a")
        assert v.state == UNMAINTAINED and "not a partition count" in v.reason, count
    assert judge({"writer": b"\xff"}, partitions="16", lease="1:a").state == HANDOVER


def test_older_feeders_keep_the_health_key_rule() -> None:
    """No P:partitions: the writer's health key decides; no writer recorded is unknown."""
    v = judge(BOOK, partitions=None, health={"state": "ok", "redis": "ok"})
    assert (v.state, v.reason) == (MAINTAINED, "writer a ok")
    v = judge(
        BOOK,
        partitions=None,
        health={"state": "degraded", "redis": "refused", "redis_error": "OOM"},
    )
    assert (v.state, v.reason) == (MAINTAINED, "writer a degraded, redis refused OOM")
    v = judge(BOOK, partitions=None, health={})
    assert v.state == UNMAINTAINED and v.reason.startswith("writer a GONE")
    assert judge({"status": "synced"}, partitions=None).state == UNKNOWN
    assert judge(BOOK, partitions=None, lease="9:z").state == UNMAINTAINED, "no health given"


def test_partition_count_and_lease_parsing() -> None:
    """What P:partitions and lease values may hold."""
    assert partition_count(b"16") == 16 and partition_count("1") == 1
    assert partition_count(None) is None and partition_count("1048577") is None
    assert read_lease(b"12:host-1:99") == Lease(12, "host-1:99")
    assert read_lease(None) is None and read_lease("12") is None

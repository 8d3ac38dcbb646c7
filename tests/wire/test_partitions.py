"""Partitions and rendezvous assignment: stable, balanced, and minimal movement."""

from __future__ import annotations

import pytest

from polybus.wire.errors import DecodeError
from polybus.wire.partitions import (
    Lease,
    assign,
    decode_lease,
    encode_lease,
    partition_of,
)


def test_partition_is_a_stable_hash_of_the_id() -> None:
    """CRC-32 modulo the count: the same in every process, run and version."""
    assert partition_of("123", 16) == 0x884863D2 % 16
    assert partition_of("123", 16) == partition_of("123", 16)
    spread = {partition_of(str(10**70 + i), 16) for i in range(200)}
    assert spread == set(range(16))


def test_every_partition_gets_replicas_carriers_and_the_load_is_even() -> None:
    """Four members, 16 partitions, two replicas: two carriers each, eight partitions each."""
    mine = assign(["host-1", "host-2", "host-3", "host-4"], 16, 2)
    for p in range(16):
        assert sum(p in ps for ps in mine.values()) == 2
    assert sorted(len(ps) for ps in mine.values()) == [8, 8, 8, 8]


@pytest.mark.parametrize("count", [3, 5, 6, 7])
def test_load_is_within_one_of_even(count: int) -> None:
    """Any number of members carries floor or ceil of partitions × replicas / members."""
    mine = assign([f"feeder-{i}" for i in range(count)], 16, 2)
    loads = sorted(len(ps) for ps in mine.values())
    assert sum(loads) == 32 and loads[-1] - loads[0] <= 2 and loads[0] >= 32 // count


def test_fewer_members_than_replicas_carry_everything() -> None:
    """One or two feeders with replicas 2: every member carries every partition."""
    assert assign(["solo"], 4, 2) == {"solo": frozenset(range(4))}
    assert assign(["a", "b"], 4, 2) == {"a": frozenset(range(4)), "b": frozenset(range(4))}
    assert assign([], 4, 2) == {}


def test_a_member_leaving_mostly_adds_to_the_survivors() -> None:
    """The leaver's partitions get new carriers; survivors give up at most two each."""
    members = ["host-1", "host-2", "host-3", "host-4"]
    before = assign(members, 16, 2)
    for gone in members:
        rest = [m for m in members if m != gone]
        after = assign(rest, 16, 2)
        assert all(len(before[m] - after[m]) <= 2 for m in rest), gone


def test_order_of_members_does_not_matter() -> None:
    """Every feeder computes the same answer from the same set of members."""
    assert assign(["x", "y", "z"], 16, 2) == assign(["z", "x", "y", "x"], 16, 2)


def test_lease_values_round_trip_and_garbage_is_refused() -> None:
    """`fence:holder` is what the lease key holds; anything else is a DecodeError."""
    lease = Lease(17, "host-42:a")
    assert encode_lease(lease) == "17:host-42:a"
    assert decode_lease("17:host-42:a") == lease
    for bad in ("", "17", "x:host", ":host", "17:"):
        with pytest.raises(DecodeError):
            decode_lease(bad)

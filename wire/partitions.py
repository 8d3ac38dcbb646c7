"""Partitions, replicas and leases: who carries a token and who may write it. Pure.

A token's partition is a stable hash of its id modulo the partition count (recorded once in
Redis, `P:partitions`). Each partition is carried by `replicas` feeders, chosen from the live
members by rendezvous hashing: every member scores each partition and the best `replicas`
scores carry it — so any feeder computes the same answer from the same member list, and a
member joining or leaving moves only the partitions it wins or held. Of the carriers, the one
holding the partition's lease (`P:lease:{pN}`, value `fence:feeder_id`) writes; the others
stand by hot. The fence is a number that only grows (INCR at every acquisition); the atomic
step refuses a write whose fence is lower than the one already in the book hash.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from polybus.wire.errors import DecodeError


__all__ = ["Lease", "assign", "decode_lease", "encode_lease", "partition_of", "ranked"]


def partition_of(token: str, partitions: int) -> int:
    """The token's partition: CRC-32 of its id (stable across processes and versions)."""
    return zlib.crc32(token.encode()) % partitions


def _score(member: str, partition: int) -> bytes:
    return hashlib.blake2b(f"{partition}/{member}".encode(), digest_size=8).digest()


def ranked(partition: int, members: Iterable[str]) -> list[str]:
    """Every member, best rendezvous score for `partition` first."""
    return sorted(set(members), key=lambda m: _score(m, partition), reverse=True)


def assign(members: Iterable[str], partitions: int, replicas: int) -> dict[str, frozenset[int]]:
    """member -> the partitions it carries; every partition has min(replicas, members) carriers.

    Rendezvous hashing with bounded load: all (partition, member) pairs are taken best score
    first, each accepted while its partition needs carriers and its member carries fewer than
    ceil(partitions * replicas / members). Four feeders on 16 partitions with 2 replicas carry
    8 each (plain rendezvous spreads them 4 to 12); members left below the floor then take
    their best-scoring partitions from the heaviest. Every feeder computes the same answer.
    """
    live = sorted(set(members))
    if not live:
        return {}
    want = min(replicas, len(live))
    cap = -(-partitions * want // len(live))
    mine: dict[str, set[int]] = {m: set() for m in live}
    need = dict.fromkeys(range(partitions), want)
    pairs = sorted(((_score(m, p), p, m) for p in range(partitions) for m in live), reverse=True)
    for _, p, m in pairs:
        if need[p] and len(mine[m]) < cap:
            mine[m].add(p)
            need[p] -= 1
    for p in (p for p, n in need.items() if n):  # only when every member with room was taken
        for m in ranked(p, (m for m in live if p not in mine[m]))[: need[p]]:
            mine[m].add(p)
    _fill_the_light(mine, partitions * want // len(live))
    return {m: frozenset(ps) for m, ps in mine.items()}


def _fill_the_light(mine: dict[str, set[int]], floor: int) -> None:
    """Give each member below `floor` partitions the best-scoring ones from members above it."""
    while True:
        light = next((m for m in sorted(mine) if len(mine[m]) < floor), None)
        if light is None:
            return
        moves = [
            (_score(light, p), p, heavy)
            for heavy in sorted(mine)
            if len(mine[heavy]) > floor
            for p in mine[heavy]
            if p not in mine[light]
        ]
        if not moves:
            return
        _, p, heavy = max(moves)
        mine[heavy].remove(p)
        mine[light].add(p)


@dataclass(frozen=True, slots=True)
class Lease:
    """A partition lease's value: the fence it was taken with and the feeder holding it."""

    fence: int
    holder: str


def encode_lease(lease: Lease) -> str:
    """`fence:holder`, what `P:lease:{pN}` holds (readable in redis-cli)."""
    return f"{lease.fence}:{lease.holder}"


def decode_lease(text: str) -> Lease:
    """Parse a lease value; DecodeError for anything a feeder did not write."""
    fence, sep, holder = text.partition(":")
    if not sep or not fence.isdigit() or not holder:
        raise DecodeError(f"not a lease value: {text[:60]!r}")
    return Lease(int(fence), holder)

"""Which partitions this feeder carries, and which leases it takes, renews or gives up. Pure.

Every beat the leadership loop reads the live members, which partitions each has warm (every
token of it carried and synced), and each partition's lease; `plan` turns that into actions:

- carry the partitions rendezvous assigns to me (wire/partitions.py), and keep carrying any
  other one until its assigned carriers are all warm — so a partition never loses its last
  hot standby (or its leader) while the new carriers are still fetching their books;
- renew every lease I hold; release one that is no longer assigned to me once an assigned
  carrier is warm for it (the hand-over is then immediate, see feeder/leadership.py);
- take a free lease of a partition I carry when I am warm for it, or when no other live
  member is (someone must write; a cold leader publishes books as they arrive, as at start).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from polybus.wire.partitions import Lease, assign, ranked


__all__ = ["Plan", "View", "plan"]


@dataclass(frozen=True, slots=True)
class View:
    """What one beat read from Redis."""

    me: str
    members: frozenset[str]
    """Live feeders on this prefix (me included)."""
    warm: Mapping[str, frozenset[int]]
    """member -> partitions it has warm (from its health hash)."""
    leases: Mapping[int, Lease]
    """partition -> its live lease (a free partition is absent)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do this beat."""

    carry: frozenset[int]
    acquire: frozenset[int]
    renew: frozenset[int]
    release: frozenset[int]


def plan(
    view: View,
    partitions: int,
    replicas: int,
    *,
    carrying: frozenset[int],
    led: frozenset[int],
    warm: frozenset[int],
) -> Plan:
    """This beat's actions for `view.me`, who carries `carrying`, leads `led`, is `warm`."""
    members = view.members | {view.me}
    assigned = assign(members, partitions, replicas)
    mine = assigned[view.me]

    def taken_care_of(p: int) -> bool:
        """p's other assigned carriers exist and are all warm for it."""
        others = [m for m in ranked(p, members) if m != view.me and p in assigned[m]]
        return bool(others) and all(p in view.warm.get(m, frozenset()) for m in others)

    release = frozenset(p for p in led if p not in mine and taken_care_of(p))
    renew = led - release
    carry = frozenset(mine | renew | {p for p in carrying if not taken_care_of(p)})
    others_warm = {p for m, ps in view.warm.items() if m != view.me and m in members for p in ps}
    acquire = frozenset(
        p for p in carry - led if p not in view.leases and (p in warm or p not in others_warm)
    )
    return Plan(carry=carry, acquire=acquire, renew=renew, release=release)

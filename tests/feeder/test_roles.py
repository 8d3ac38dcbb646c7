"""The leadership plan: carry what is assigned, hand over only to warm carriers, fill holes."""

from __future__ import annotations

from polybus.feeder.roles import View, plan
from polybus.wire.partitions import Lease, assign


P, R = 16, 2
ALL = frozenset(range(P))
NONE: frozenset[int] = frozenset()


def view(
    me: str,
    members: list[str],
    warm: dict[str, frozenset[int]] | None = None,
    leases: dict[int, Lease] | None = None,
) -> View:
    return View(me, frozenset(members), warm or {}, leases or {})


def test_alone_a_feeder_carries_and_takes_everything() -> None:
    """The first feeder: every partition carried, every free lease taken."""
    got = plan(view("a", ["a"]), P, R, carrying=ALL, led=NONE, warm=NONE)
    assert got.carry == ALL and got.acquire == ALL and got.renew == got.release == NONE


def test_two_feeders_same_tokens_one_leads_one_stands_by() -> None:
    """A second feeder carries everything too (replicas 2) but takes no lease that is held."""
    leases = {p: Lease(p + 1, "a") for p in range(P)}
    got = plan(view("b", ["a", "b"], leases=leases), P, R, carrying=ALL, led=NONE, warm=NONE)
    assert got.carry == ALL and got.acquire == NONE


def test_a_standby_takes_the_leases_that_expired() -> None:
    """The leader gone (its leases expired): the warm standby takes every partition."""
    got = plan(view("b", ["b"], warm={"b": ALL}), P, R, carrying=ALL, led=NONE, warm=ALL)
    assert got.acquire == ALL


def test_a_cold_carrier_leaves_a_free_lease_to_a_warm_one() -> None:
    """Two carriers, a free lease: only the warm one takes it (its book is ready)."""
    warm = {"a": frozenset({3})}
    cold = plan(view("b", ["a", "b"], warm=warm), P, R, carrying=ALL, led=NONE, warm=NONE)
    assert 3 not in cold.acquire and 4 in cold.acquire
    hot = plan(view("a", ["a", "b"], warm=warm), P, R, carrying=ALL, led=NONE, warm=frozenset({3}))
    assert 3 in hot.acquire


def test_unassigned_partitions_are_kept_until_their_carriers_are_warm() -> None:
    """A third and fourth feeder join: `a` sheds a partition only once its new carriers are warm."""
    members = ["a", "b", "c", "d"]
    mine = assign(members, P, R)["a"]
    shed = sorted(ALL - mine)
    led = frozenset(shed[:2])
    cold = plan(view("a", members), P, R, carrying=ALL, led=led, warm=ALL)
    assert cold.carry == ALL and cold.release == NONE and cold.renew == led
    everyone_warm = {m: ALL for m in members}
    hot = plan(view("a", members, warm=everyone_warm), P, R, carrying=ALL, led=led, warm=ALL)
    assert hot.carry == mine and hot.release == led and hot.renew == NONE

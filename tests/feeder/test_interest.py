"""Dynamic interest planning: add leased tokens, retire them after the grace period."""

from __future__ import annotations

from feeder.interest import plan_interest


def test_live_leases_of_uncarried_tokens_are_added() -> None:
    """A live lease on a token nobody carries adds it; configured and carried ones are left."""
    plan = plan_interest({"1": 2000, "2": 2000, "3": 2000, "4": 500}, {"2"}, {"3"}, 1000, 60_000)
    assert plan.add == ["1"]
    assert plan.retire == []


def test_expired_leases_retire_only_after_grace() -> None:
    """A dynamic token retires once its lease has been expired for the grace period."""
    assert plan_interest({"5": 1000}, set(), {"5"}, 1500, 1000).retire == []
    assert plan_interest({"5": 1000}, set(), {"5"}, 2000, 1000).retire == ["5"]
    assert plan_interest({}, set(), {"5"}, 2000, 1000).retire == ["5"]


def test_configured_tokens_never_retire_and_bad_ids_are_reported() -> None:
    """Configured tokens are not dynamic; a lease on a non-token id is reported, not added."""
    plan = plan_interest({"abc": 9e12, "7": 1}, {"7"}, set(), 5000, 0)
    assert plan.add == [] and plan.retire == [] and plan.invalid == ["abc"]

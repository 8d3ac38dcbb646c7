"""Dynamic interest: which leased tokens to add, and which to retire. Pure.

Consumers keep a lease per token in `P:interest` (zset: token -> lease expiry, ms since the
epoch). The feeder carries every token with a live lease that it was not configured with, and
retires such a token once its lease has been expired for `grace` seconds — so a consumer that
restarts within the grace period finds its books still warm. Configured tokens are never
retired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wire.errors import InvalidToken
from wire.keys import validate_token


__all__ = ["InterestPlan", "plan_interest"]


@dataclass(slots=True)
class InterestPlan:
    """What to change now."""

    add: list[str] = field(default_factory=list)
    retire: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def plan_interest(
    leases: dict[str, float],
    configured: set[str],
    dynamic: set[str],
    now_ms: float,
    grace_ms: float,
) -> InterestPlan:
    """Tokens to add (a live lease, not carried) and to retire (lease expired > grace)."""
    plan = InterestPlan()
    for token, expiry in sorted(leases.items()):
        if expiry <= now_ms or token in configured or token in dynamic:
            continue
        try:
            validate_token(token)
        except InvalidToken:
            plan.invalid.append(token)
            continue
        plan.add.append(token)
    for token in sorted(dynamic):
        lease = leases.get(token)
        if lease is None or lease + grace_ms <= now_ms:
            plan.retire.append(token)
    return plan

"""Dynamic interest: which leased tokens to add, and which to retire. Pure.

Consumers keep a lease per token in `P:interest` (zset: token -> lease expiry, ms since the
epoch). The feeder carries every token with a live lease that it was not configured with, and
retires such a token once its lease has been expired for `grace` seconds — so a consumer that
restarts within the grace period finds its books still warm. Configured tokens are never
retired.

`P:interest` is writable by every strategy, so the plan is bounded:
- at most `max_tokens` leased tokens are carried; leases beyond that are ignored (and counted),
  the same ones every poll (tokens already carried keep their place, then token-id order);
- no lease counts for more than `max_lease_ms` from now. Consumers renew with `ZADD GT`, which
  only ever extends a score, so a lease of 10⁸ days could never be shortened by anyone: the
  plan asks the feeder to clamp such a score down in Redis (`clamp`), after which it lapses
  like any other lease once nobody renews it;
- a member that is not a token id is reported in `invalid`, for the feeder to remove once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from polybus.wire.errors import InvalidToken
from polybus.wire.keys import validate_token


__all__ = ["InterestPlan", "InterestStats", "next_stats", "plan_interest"]

DEFAULT_MAX_TOKENS = 2000
DEFAULT_MAX_LEASE_MS = 3_600_000.0


@dataclass(slots=True)
class InterestPlan:
    """What to change now."""

    add: list[str] = field(default_factory=list)
    retire: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    """Members that are not token ids: remove them from the zset."""
    clamp: dict[str, float] = field(default_factory=dict)
    """Leases longer than the maximum -> the score to lower them to (now + maximum)."""
    over_limit: int = 0
    """Live leases of tokens not carried because `max_tokens` leased tokens are."""


@dataclass(frozen=True, slots=True)
class InterestStats:
    """What the interest loop did, for metrics and its periodic log line (replaced per poll)."""

    leased: int = 0
    """Tokens carried because of a lease."""
    over_limit: int = 0
    """Leases ignored at the last poll because the maximum number of tokens is carried."""
    clamped: int = 0
    """Leases clamped to the maximum length, in total."""
    invalid_removed: int = 0
    """Members removed from the zset because they were not token ids, in total."""
    truncated: int = 0
    """Leases not read at the last poll because the zset held more than the read limit."""


def plan_interest(
    leases: dict[str, float],
    configured: set[str],
    dynamic: set[str],
    now_ms: float,
    grace_ms: float,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_lease_ms: float = DEFAULT_MAX_LEASE_MS,
    complete: bool = True,
) -> InterestPlan:
    """Tokens to add (a live lease, not carried, room left) and to retire (expired > grace).

    `complete=False` says `leases` is not the whole zset (the read was capped): a carried
    token whose lease is missing may just not have been read, so it is not retired.
    """
    plan = InterestPlan()
    ceiling = now_ms + max_lease_ms
    candidates: list[str] = []
    for token, expiry in sorted(leases.items()):
        if not _is_token(token):
            plan.invalid.append(token)
            continue
        if expiry > ceiling:
            plan.clamp[token] = ceiling
        if expiry > now_ms and token not in configured and token not in dynamic:
            candidates.append(token)
    room = max(0, max_tokens - len(dynamic))
    plan.add, plan.over_limit = candidates[:room], max(0, len(candidates) - room)
    for token in sorted(dynamic):
        lease = leases.get(token)
        if lease is None and not complete:
            continue
        if lease is None or min(lease, ceiling) + grace_ms <= now_ms:
            plan.retire.append(token)
    return plan


def _is_token(member: str) -> bool:
    try:
        validate_token(member)
    except InvalidToken:
        return False
    return True


def next_stats(
    stats: InterestStats, plan: InterestPlan, *, leased: int, removed: int, truncated: int
) -> InterestStats:
    """The counters after one poll that followed `plan` (removed: members actually deleted)."""
    return InterestStats(
        leased=leased,
        over_limit=plan.over_limit,
        clamped=stats.clamped + len(plan.clamp),
        invalid_removed=stats.invalid_removed + removed,
        truncated=truncated,
    )

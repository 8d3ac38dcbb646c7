"""Reading and tidying `P:interest`: the I/O half of dynamic interest (the plan is pure).

The zset is written by strategies, so nothing in it is trusted: members are read as bytes (a
non-UTF-8 member must not raise out of the feeder's loop), at most `limit` of them per poll
(soonest expiry first, so ordinary short leases are read before any pile of hostile long
ones), and members that are not tokens are removed so they are reported once, not forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.client import NEVER_DECODE

from polybus.redisio import Client


__all__ = ["LeaseRead", "read_leases", "tidy_leases"]


@dataclass(slots=True)
class LeaseRead:
    """One poll's view of the zset."""

    leases: dict[str, float] = field(default_factory=dict)
    undecodable: list[bytes] = field(default_factory=list)
    """Members that are not UTF-8 (never a token): remove them as they are."""
    truncated: int = 0
    """Live leases beyond the read limit, not looked at this poll."""


async def read_leases(redis: Client, key: str, since_ms: float, limit: int) -> LeaseRead:
    """Leases expiring after `since_ms`, soonest first, at most `limit` of them."""
    raw = await redis.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
        "ZRANGEBYSCORE",
        key,
        f"({since_ms}",
        "+inf",
        "WITHSCORES",
        "LIMIT",
        0,
        limit,
        **{NEVER_DECODE: True},
    )
    # redis-py pairs WITHSCORES replies itself in some versions and protocols, not in others.
    pairs = (
        raw if raw and isinstance(raw[0], list | tuple) else zip(raw[::2], raw[1::2], strict=True)
    )
    read = LeaseRead()
    for member, score in pairs:
        try:
            read.leases[member.decode()] = float(score)
        except UnicodeDecodeError:
            read.undecodable.append(member)
    if len(read.leases) + len(read.undecodable) >= limit:
        read.truncated = max(0, int(await redis.zcount(key, f"({since_ms}", "+inf")) - limit)
    return read


async def tidy_leases(
    redis: Client,
    key: str,
    expired_before: float,
    remove: list[str | bytes],
    clamp: dict[str, float],
) -> None:
    """Drop long-expired leases and non-token members; lower over-long leases (`XX LT`)."""
    pipe = redis.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", f"({expired_before}")
    if remove:
        pipe.zrem(key, *remove)
    if clamp:
        # LT: only ever lowers a score (a renewal written meanwhile is never raised past);
        # XX: a lease removed meanwhile is not re-created.
        pipe.zadd(key, clamp, xx=True, lt=True)
    await pipe.execute()

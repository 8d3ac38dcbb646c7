"""Who maintains these books? The reads `wire.maintained.judge` needs, for the CLI tools.

One GET of `P:partitions`, then one pipeline: the lease of each partition the books fall in
(a partitioned prefix), or the health hash of each writer (older feeders). Errors in a reply
(a key of another type: someone else wrote it) read as garbage, never as a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polybus.redisio import Client
from polybus.wire import keys
from polybus.wire.hashes import BookField
from polybus.wire.maintained import Verdict, judge, partition_count
from polybus.wire.partitions import partition_of


__all__ = ["read_partitions", "verdicts"]


def _value(reply: Any) -> Any:
    """A pipeline reply; an error reply (WRONGTYPE…) as text no feeder writes."""
    return f"<{reply}>" if isinstance(reply, Exception) else reply


async def read_partitions(redis: Client, prefix: str) -> Any:
    """GET `P:partitions` (None: absent; an error reply as garbage text)."""
    pipe = redis.pipeline(transaction=False)
    pipe.get(keys.partitions(prefix))
    (reply,) = await pipe.execute(raise_on_error=False)
    return _value(reply)


async def verdicts(
    redis: Client, prefix: str, books: Mapping[str, Mapping[str, Any]]
) -> dict[str, Verdict]:
    """token -> the verdict on its book; `books` holds at least `writer` and `fence` of each."""
    partitions = await read_partitions(redis, prefix)
    pipe = redis.pipeline(transaction=False)
    if partitions is None:
        writers = sorted({str(f.get(BookField.WRITER) or "") for f in books.values()} - {""})
        for writer in writers:
            pipe.hgetall(keys.feeder(writer, prefix))
        healths = dict(zip(writers, await pipe.execute(raise_on_error=False), strict=True))
        return {
            token: judge(
                f, partitions=None, health=_health(healths.get(str(f.get(BookField.WRITER) or "")))
            )
            for token, f in books.items()
        }
    count = partition_count(partitions)
    of = {token: partition_of(token, count) for token in books} if count else {}
    wanted = sorted(set(of.values()))
    for p in wanted:
        pipe.get(keys.lease(p, prefix))
    leases = dict(zip(wanted, map(_value, await pipe.execute(raise_on_error=False)), strict=True))
    return {
        token: judge(
            f,
            partitions=partitions,
            partition=of.get(token),
            lease=leases.get(of[token]) if token in of else None,
        )
        for token, f in books.items()
    }


def _health(reply: Any) -> Mapping[Any, Any] | None:
    return reply if isinstance(reply, Mapping) else None

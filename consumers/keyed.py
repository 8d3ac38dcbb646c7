"""Per-key reads that fail per key on a Redis Cluster: a dead primary costs only its keys.

redis-py's cluster pipeline raises for the whole pipeline when one node cannot be reached, so
a consumer reading its tokens through it would take one primary's failover for a lost Redis
and doubt every book. `reads` sends each primary its share itself (polybus.redisio.nodes, as
the feeder does) and hands back each key's reply or error; `out_of_reach` tells the errors
that mean "its primary is failing over" from those about the key itself (WRONGTYPE, NOPERM).

A key out of reach makes the client's slot map stale: the next `reads` asks the cluster again
(CLUSTER SLOTS) which node serves what, at most every REFRESH_S, so a promoted replica is
found within that once it serves. A key unreached (refused, reset, timed out) is sent again,
up to three times within ~0.1 s: another task's failed call on the same client may have
closed a healthy node's connections under it (redis-py closes every node's connections at a
CLUSTERDOWN, in tasks of their own), and only a node that fails every try is taken as gone;
one whose open connection keeps breaking under it is tried for up to CLOSED_FOR_S.
When no node answers the slot map cannot be had: that raises a ConnectionError, a lost Redis
like a single server's. On one server this is one pipeline, as before: a failure there is
everyone's, raised by the pipeline.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError, RedisClusterException

from polybus.consumers.redisio import RAW
from polybus.redisio import Client
from polybus.redisio.nodes import Keyed, per_node, refresh, unreached, unsettled


__all__ = ["REFRESH_S", "out_of_reach", "reads"]

REFRESH_S = 0.25
"""Least time between two slot-map refreshes of one client while keys are out of reach."""

_AGAIN_S = (0.0, 0.02, 0.05)
"""Pauses before sending an unreached key's command again: only a key unreached every time
is out of reach (redis-py closes healthy nodes' connections in tasks of their own)."""

CLOSED_FOR_S = 1.0
"""How long a key whose connection keeps being closed under it is sent again (every
_CLOSED_PAUSE_S) before it counts as unreached. That is a healthy node's symptom through a
failover: redis-py closes every node's connections again at each other task's failure, which
a loaded machine spread past _AGAIN_S's 70 ms. A dead node refuses the new connection at once
instead, so its keys are unreached as soon as before."""
_CLOSED_PAUSE_S = 0.05

_stale: weakref.WeakSet[RedisCluster] = weakref.WeakSet()
"""Clients some key of which was out of reach since their map was last refreshed."""

_refreshed: weakref.WeakKeyDictionary[RedisCluster, float] = weakref.WeakKeyDictionary()
"""Client -> when (monotonic) this module last refreshed its slot map."""


async def reads(redis: Client, commands: Sequence[Keyed]) -> list[Any]:
    """Each command's reply (undecoded) or the exception it met, in order."""
    if not isinstance(redis, RedisCluster):
        pipe = redis.pipeline(transaction=False)
        for _, args in commands:
            pipe.execute_command(*args, **RAW)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
    await _refresh_if_due(redis)
    results = await _per_node(redis, commands)
    deadline = time.monotonic() + CLOSED_FOR_S
    for pause in _AGAIN_S:
        if not await _send_again(redis, commands, results, unreached, pause):
            break
    else:  # still unreached: go on only with keys whose connection was closed under them
        while time.monotonic() < deadline and await _send_again(
            redis, commands, results, _closed_under_us, _CLOSED_PAUSE_S
        ):
            pass
    if any(out_of_reach(redis, r) for r in results):
        _stale.add(redis)
    return results


async def _send_again(
    redis: RedisCluster,
    commands: Sequence[Keyed],
    results: list[Any],
    which: Callable[[BaseException], bool],
    pause: float,
) -> bool:
    """After `pause`, send again the commands whose error is `which`, their new results in
    `results`; False when there was none to send."""
    again = [i for i, r in enumerate(results) if isinstance(r, BaseException) and which(r)]
    if not again:
        return False
    _stale.add(redis)
    await asyncio.sleep(pause)  # let the closing of connections scheduled meanwhile run
    await _refresh_if_due(redis)
    retried = await _per_node(redis, [commands[i] for i in again])
    for i, result in zip(again, retried, strict=True):
        results[i] = result
    return True


def _closed_under_us(exc: BaseException) -> bool:
    """An established connection broke under the command (closed while reading, lost while
    writing: what redis-py's closing of every node's connections does to a healthy node's),
    not a connection that could not be made (refused, or timed out: a dead or hung node)."""
    return isinstance(exc, RedisConnectionError) and not _not_connected(exc)


def _not_connected(exc: BaseException) -> bool:
    """redis-py could not open the connection: it says "… connecting to host:port" (its
    format_error_message), the refusal itself is in the exception's context."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain is short; never follow one forever
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError) or " connecting to " in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def out_of_reach(redis: Client, reply: Any) -> bool:
    """On a cluster: a key's error that says its primary is failing over (unreached, or the
    cluster declined for now), not that anything is wrong with the key."""
    return (
        isinstance(redis, RedisCluster)
        and isinstance(reply, BaseException)
        and (unreached(reply) or unsettled(reply))
    )


async def _per_node(redis: RedisCluster, commands: Sequence[Keyed]) -> list[Any]:
    try:
        return await per_node(redis, commands, options=RAW)
    except RedisClusterException as exc:  # not a RedisError: the loop must see a lost Redis
        raise RedisConnectionError(f"no node of the cluster answers: {exc}") from exc


async def _refresh_if_due(redis: RedisCluster) -> None:
    """Refresh a stale slot map, at most every REFRESH_S; raises when no node answers."""
    now = time.monotonic()
    if redis not in _stale or now - _refreshed.get(redis, float("-inf")) < REFRESH_S:
        return
    _stale.discard(redis)
    _refreshed[redis] = now
    try:
        await refresh(redis)
    except RedisClusterException as exc:
        raise RedisConnectionError(f"no node of the cluster answers: {exc}") from exc

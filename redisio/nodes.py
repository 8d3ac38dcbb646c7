"""Many slots' commands on a cluster, one pipeline per primary, each primary failing alone.

redis-py's cluster pipeline (8.1) splits the commands per node, but a node it cannot reach
raises for the whole pipeline; it then retries the whole of it, closing every node's
connections first (so replies in flight on healthy nodes are lost with them), and after its
retries it raises. A feeder writing thousands of tokens wants the opposite during a primary's
failover: the healthy primaries' commands answered, the others' failures per command. So
`per_node` sends each primary its share itself (the nodes' own pipelines, sent at once) and
retries nothing: what failed comes back as that command's exception, and the caller decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.exceptions import ClusterDownError, ConnectionError, TimeoutError

from polybus.redisio.connect import REDIS_ERRORS, REDIS_OR_OS_ERRORS, UNSETTLED


__all__ = ["Keyed", "per_node", "refresh", "unreached", "unsettled"]

Keyed = tuple[str, Sequence[Any]]
"""A command and the key that routes it: (key, (name, *args))."""


async def per_node(
    redis: RedisCluster,
    commands: Sequence[Keyed],
    prelude: Sequence[Any] = (),
    options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Each command's reply, or the exception it met, in order; one round trip per primary,
    all primaries at once. `prelude`: a command sent first on every primary written to (its
    reply is dropped; e.g. SCRIPT LOAD before the EVALSHAs it serves). `options`: what
    `execute_command` would take for each command's reply (NEVER_DECODE, say).

    A slot the client's map has no node for answers SlotNotCoveredError; a primary that cannot
    be reached answers ConnectionError (or TimeoutError) for each of its commands. Raises only
    when the slot map itself cannot be had (no node of the cluster answers)."""
    if not redis.nodes_manager.slots_cache:  # a new client knows no node until asked
        await redis.initialize()
    # Not again once the map is known: after any failed call redis-py's initialize() also
    # asks its default node (maybe the dead primary) for COMMAND, and on failure closes every
    # node's connections, in flight or not. A stale map is the caller's to `refresh`.
    results: list[Any] = [None] * len(commands)
    shares: dict[str, tuple[ClusterNode, list[PipelineCommand]]] = {}
    for i, (key, args) in enumerate(commands):
        try:
            node = redis.get_node_from_key(key)
        except REDIS_ERRORS as exc:  # SlotNotCoveredError: the map is missing the slot
            results[i] = exc
            continue
        if node is None:  # only for a replica; never for a primary, but typed so
            results[i] = ClusterDownError(f"no node serves {key!r}")
            continue
        share = shares.setdefault(node.name, (node, []))[1]
        if prelude and not share:
            share.append(PipelineCommand(-1, *prelude))
        share.append(PipelineCommand(i, *args, **(options or {})))
    await asyncio.gather(*(_send(node, share) for node, share in shares.values()))
    for _, share in shares.values():
        for cmd in share:
            if cmd.position >= 0:
                results[cmd.position] = cmd.result
    return results


async def _send(node: ClusterNode, share: list[PipelineCommand]) -> None:
    """One node's pipeline; a failure before any reply (refused, reset) fails each command."""
    try:
        await node.execute_pipeline(share)
    except REDIS_OR_OS_ERRORS as exc:
        _fail(share, exc)
    except (AttributeError, RuntimeError) as exc:
        # redis-py (8.1) closes a node's connections from other calls' error paths, in flight
        # or not; a send racing that meets a connection without its writer
        _fail(share, ConnectionError(f"connection closed under the pipeline: {exc!r}"))


def _fail(share: list[PipelineCommand], exc: Exception) -> None:
    for cmd in share:
        if cmd.result is None:
            cmd.result = exc


async def refresh(redis: RedisCluster) -> None:
    """Ask the cluster again which node serves which slot (after a failover: the promoted
    replica). Raises RedisClusterException when no node answers."""
    await redis.nodes_manager.initialize()


def unreached(exc: BaseException) -> bool:
    """A command whose node could not be reached, or did not answer: whether it ran is
    unknown."""
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


def unsettled(exc: BaseException) -> bool:
    """A command the cluster declined to run for now (CLUSTERDOWN, TRYAGAIN, MOVED, ASK, a slot
    the client's map lacks): it did not run, and may be sent again as it is."""
    return isinstance(exc, UNSETTLED)

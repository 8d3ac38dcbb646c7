"""The way in to Redis for every polybus package: one server or a Redis Cluster, asked, not set.

A `REDIS_URL` may name a single Redis or any node of a cluster; `connect` asks the server which
it is and returns the client that fits, so nothing else changes for the user. This is the only
place that decides; the feeder, the consumers and replay import it (it imports only wire).
"""

from __future__ import annotations

from polybus.redisio.connect import (
    REDIS_ERRORS,
    REDIS_OR_OS_ERRORS,
    UNSETTLED,
    Client,
    cluster,
    connect,
    is_cluster,
    on_cluster,
    packing_in_c,
    run_ids,
    upgrade,
)


__all__ = [
    "REDIS_ERRORS",
    "REDIS_OR_OS_ERRORS",
    "UNSETTLED",
    "Client",
    "cluster",
    "connect",
    "is_cluster",
    "on_cluster",
    "packing_in_c",
    "run_ids",
    "upgrade",
]

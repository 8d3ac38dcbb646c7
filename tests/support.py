"""Test support: a private redis-server per test, a local Redis Cluster, and waiting for
conditions with timeouts."""

from __future__ import annotations

import os

from polybus.redisproc import LocalCluster, RedisServer, free_port
from polybus.rig import wait_for


__all__ = ["MS", "LocalCluster", "RedisServer", "free_port", "wait_for"]


MS = float(os.environ.get("POLYBUS_TEST_MS", "0.001"))
"""One millisecond in seconds; scale every timeout by it on slow machines."""

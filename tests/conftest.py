"""Shared fixtures: a private redis-server per test that needs one, a Redis Cluster per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from hypothesis import settings

from tests.support import LocalCluster, RedisServer


# Properties run the same examples every time (CI must be deterministic) and never fail on a
# slow example: this machine has two cores that other tests keep busy.
settings.register_profile("polybus", derandomize=True, deadline=None, database=None)
settings.load_profile("polybus")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private, empty redis-server on a free port, killed after the test."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def _session_cluster() -> Iterator[LocalCluster]:
    """One 3-primary, 3-replica cluster for every test that asks (it takes ~6 s to form)."""
    cluster = LocalCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_cluster(_session_cluster: LocalCluster) -> LocalCluster:
    """The shared cluster, empty, every node up and in sync (a killed node is started again
    and rejoins as a replica)."""
    for node in _session_cluster.nodes:
        if not node.alive:
            _session_cluster.revive(node)
    _session_cluster.wait_healthy()
    _session_cluster.flush()
    return _session_cluster


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Entry points configure structlog globally; put it back after each test."""
    yield
    structlog.reset_defaults()

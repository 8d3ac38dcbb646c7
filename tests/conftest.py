"""Shared fixtures: a private redis-server per test that needs one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from hypothesis import settings

from tests.support import RedisServer


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


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Entry points configure structlog globally; put it back after each test."""
    yield
    structlog.reset_defaults()

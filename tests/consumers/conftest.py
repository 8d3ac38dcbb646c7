"""Consumer-test fixtures: no MarketFeed outlives its test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from polybus.consumers.feed import _stop


@pytest.fixture(autouse=True)
async def _stop_feeds() -> AsyncIterator[None]:
    """A test that fails before `disconnect()` leaves its feed's loop running: stop it here
    (cancelling until it ends) so the failure is reported instead of a hung teardown."""
    yield
    for task in asyncio.all_tasks():
        if task.get_name().startswith("MarketFeed ") and not task.done():
            await _stop(task)

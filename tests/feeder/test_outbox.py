"""The outbox's bounded takes: a write never carries more than its limit of events."""

from __future__ import annotations

import asyncio

from polybus.feeder.outbox import Outbox
from polybus.wire.events import PriceChange, Status


def change(token: str, i: int) -> PriceChange:
    return PriceChange(token, str(i), "bid", "0.5", str(i + 1), "", "", "h")


def sizes(token: str, batch) -> list[str]:
    """The `size` items of a token's entries in a batch, in order."""
    return [e[e.index("size") + 1] for e in batch.entries.get(token, [])]


async def test_a_take_returns_at_most_its_limit_and_keeps_each_tokens_order() -> None:
    """Takes of 10 from 25 events of two tokens give 10, 10, 5, each token's events in order
    across the takes, oldest token first, and the outbox empty and not ready after."""
    outbox = Outbox()
    await outbox.put([change("A", i) for i in range(15)], 1, 1)
    await outbox.put([change("B", i) for i in range(10)], 1, 1)
    takes = [await asyncio.wait_for(outbox.take(limit=10), 1) for _ in range(3)]
    assert [t.size for t in takes] == [10, 10, 5]
    assert list(takes[0].entries) == ["A"]
    assert sizes("A", takes[0]) + sizes("A", takes[1]) == [str(i + 1) for i in range(15)]
    assert sizes("B", takes[1]) + sizes("B", takes[2]) == [str(i + 1) for i in range(10)]
    assert len(outbox) == 0
    assert not outbox._ready.is_set()


async def test_a_split_token_keeps_its_fence_and_the_peek_goes_first() -> None:
    """A token cut by the limit keeps its fence for the rest, whose entries come before any
    newer ones; a takeover's peek goes with the first part, and quarantine entries at once."""
    outbox = Outbox()
    await outbox.put([change("A", i) for i in range(6)], 1, 1)
    outbox._batch.fences["A"] = 7
    outbox._batch.peek.add("A")
    outbox.quarantine("junk", "malformed_json", 1)
    first = await outbox.take(limit=4)
    assert first.size == 5 and first.fences == {"A": 7} and first.peek == {"A"}
    assert len(first.quarantine) == 1
    await outbox.put([change("A", 6)], 1, 1)
    second = await outbox.take(limit=4)
    assert sizes("A", second) == ["5", "6", "7"]
    assert second.fences == {"A": 7} and second.peek == set()


async def test_a_full_outbox_frees_its_producers_after_a_bounded_take() -> None:
    """A producer waiting on a full outbox is let in once a bounded take made room."""
    outbox = Outbox(capacity=20)
    await outbox.put([change("A", i) for i in range(20)], 1, 1)
    waiting = asyncio.create_task(outbox.put([Status("A", "suspect", "x")], 1, 1))
    await asyncio.sleep(0)
    assert not waiting.done()
    await outbox.take(limit=5)
    await asyncio.wait_for(waiting, 1)
    assert len(outbox) == 16


async def test_a_take_that_empties_the_outbox_leaves_it_not_ready() -> None:
    """When quarantine entries alone put a batch over the limit, the take still empties the
    outbox, and the next take waits instead of returning an empty batch."""
    outbox = Outbox()
    await outbox.put([change("A", i) for i in range(3)], 1, 1)
    for _ in range(3):
        outbox.quarantine("junk", "malformed_json", 1)
    assert (await outbox.take(limit=4)).size == 6
    assert len(outbox) == 0 and not outbox._ready.is_set()

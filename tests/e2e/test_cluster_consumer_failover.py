"""A MarketFeed on a Redis Cluster through a primary's SIGKILL: only that primary's books are
disturbed."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from polybus import MarketFeed
from tests.e2e.harness import rig
from tests.e2e.test_cluster import feeds_equal_truth, flowed, primary_of
from tests.support import LocalCluster, wait_for


async def test_a_primary_kill_turns_suspect_only_the_books_it_serves(
    redis_cluster: LocalCluster,
) -> None:
    """SIGKILL of the primary serving the most tokens: a MarketFeed following every token keeps
    the other primaries' books synced and fed throughout, turns only the victim's books
    suspect (stopping vouching meanwhile), has them synced and equal to the truth within 10 s,
    vouches again, and its task never dies."""
    # The flow is paused while the books are compared before the kill: on a loaded machine
    # that outlasted FAST's 2 s data-silence deadline, and the feeder's reconnect turned
    # every book suspect. Silence is not what this test is about.
    async with rig(redis_cluster, markets=8, silence_timeout=10.0) as r:
        port, victims = max(primary_of(redis_cluster, r.tokens).items(), key=lambda kv: len(kv[1]))
        healthy = set(r.tokens) - set(victims)
        feed = MarketFeed(redis_cluster.url, name="c0")
        changes: list[dict[str, Any]] = []
        seen: dict[str, list[float]] = defaultdict(list)

        def event(payload: dict[str, Any]) -> None:
            seen[payload["asset_id"]].append(time.monotonic())

        vouches: list[str] = []
        feed.on_status = changes.append
        feed.on_connect = lambda: vouches.append("connect")
        feed.on_disconnect = lambda: vouches.append("disconnect")
        feed.on_price_change = feed.on_book_update = feed.on_trade = event
        try:
            assert await feed.connect() and await feed.subscribe(r.tokens)
            await flowed(r, 300)
            await feeds_equal_truth(r, [feed], 10)
            changes.clear()
            vouches.clear()
            victim = next(n for n in redis_cluster.nodes if n.port == port)
            killed_at = time.monotonic()
            redis_cluster.kill(victim)
            r.sim.resume()
            await asyncio.to_thread(redis_cluster.wait_promoted, victim)
            promoted_at = time.monotonic()
            await flowed(r, 300, timeout=10)
            await feeds_equal_truth(r, [feed], max(1.0, 10 - (time.monotonic() - killed_at)))
            assert feed._task is not None and not feed._task.done(), "the feed's task died"
            await wait_for(lambda: feed.vouching, 5, "the feed to vouch again")
            assert vouches[0] == "disconnect" and vouches[-1] == "connect", vouches
        finally:
            await feed.disconnect()
        left = [
            f"{c['asset_id'][:8]}:{c['previous']}>{c['status']}({c['state']}:{c['reason']})"
            for c in changes
            if c["asset_id"] in healthy
        ]
        assert not left, f"healthy books changed status ({len(healthy)} healthy): {left[:8]}"
        fed = [t for t in healthy if any(killed_at < s < promoted_at for s in seen[t])]
        assert len(fed) * 2 >= len(healthy), f"only {len(fed)} of {len(healthy)} healthy fed"
        went = {c["asset_id"] for c in changes if c["status"] == "suspect"}
        assert went == set(victims), f"{len(went)} suspect, {len(victims)} on the victim"

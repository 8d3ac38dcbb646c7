"""Counters are the feeder's, not a connection's: they never go backwards across reconnects
or recycles (Prometheus counters and the stats line sum them)."""

from __future__ import annotations

import itertools

from polybus.feeder.metrics import FeederCollector
from tests.e2e.harness import rig
from tests.support import wait_for


def _frames_metric(feeder) -> float:
    for family in FeederCollector(feeder).collect():
        if family.name == "polybus_frames":
            return float(family.samples[0].value)
    raise AssertionError("no polybus_frames metric")


async def test_counters_never_go_backwards_across_reconnects_and_recycles(redis_server) -> None:
    """After drops and a recycle, every normalizer count and the frames metric only grew."""
    async with rig(redis_server, markets=2, recycle_interval=1.0) as r:
        await wait_for(lambda: r.feeder.counts["frames"] > 50, 10, "some frames")
        seen = [dict(r.feeder.counts)]
        metric = [_frames_metric(r.feeder)]
        for _ in range(2):
            before = sum(c.stats.connects for c in r.feeder.connections)
            r.sim.drop_all()
            await wait_for(
                lambda b=before: (
                    sum(c.stats.connects for c in r.feeder.connections) > b
                    or r.feeder.ladder_counts().get("recycles", 0) > 0
                ),
                10,
                "a reconnect",
            )
            frames = r.feeder.counts["frames"]
            await wait_for(lambda f=frames: r.feeder.counts["frames"] > f + 20, 10, "more frames")
            seen.append(dict(r.feeder.counts))
            metric.append(_frames_metric(r.feeder))
        await wait_for(lambda: r.feeder.ladder_counts().get("recycles", 0) >= 1, 10, "a recycle")
        seen.append(dict(r.feeder.counts))
        metric.append(_frames_metric(r.feeder))
    for earlier, later in itertools.pairwise(seen):
        assert all(later.get(k, 0) >= v for k, v in earlier.items()), (earlier, later)
    assert metric == sorted(metric) and metric[-1] > metric[0]

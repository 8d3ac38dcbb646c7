"""Dynamic interest: planning (pure), and a feeder under hostile leases in a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs
from websockets.asyncio.client import connect as ws_connect

from polybus.feeder.app import Feeder
from polybus.feeder.config import FeederConfig
from polybus.feeder.interest import plan_interest
from polybus.feeder.leases import read_leases, tidy_leases
from polybus.feeder.metrics import FeederCollector
from polybus.simulator import SimConfig, Simulator
from polybus.wire import keys
from tests.e2e.harness import FAST
from tests.support import RedisServer, wait_for


def test_live_leases_of_uncarried_tokens_are_added() -> None:
    """A live lease on a token nobody carries adds it; configured and carried ones are left."""
    plan = plan_interest({"1": 2000, "2": 2000, "3": 2000, "4": 500}, {"2"}, {"3"}, 1000, 60_000)
    assert plan.add == ["1"]
    assert plan.retire == []


def test_expired_leases_retire_only_after_grace() -> None:
    """A dynamic token retires once its lease has been expired for the grace period."""
    assert plan_interest({"5": 1000}, set(), {"5"}, 1500, 1000).retire == []
    assert plan_interest({"5": 1000}, set(), {"5"}, 2000, 1000).retire == ["5"]
    assert plan_interest({}, set(), {"5"}, 2000, 1000).retire == ["5"]


def test_configured_tokens_never_retire_and_bad_ids_are_reported() -> None:
    """Configured tokens are not dynamic; a lease on a non-token id is reported, not added."""
    plan = plan_interest({"abc": 9e12, "7": 1}, {"7"}, set(), 5000, 0)
    assert plan.add == [] and plan.retire == [] and plan.invalid == ["abc"]


def test_leases_beyond_the_token_limit_are_ignored_and_counted() -> None:
    """With max_tokens leased tokens carried, further leases add nothing and are counted."""
    leases = {str(100 + i): 9000.0 for i in range(10)}
    plan = plan_interest(leases, set(), {"100", "101"}, 1000, 0, max_tokens=5)
    assert plan.add == ["102", "103", "104"]
    assert plan.over_limit == 5
    full = plan_interest(leases, set(), {str(100 + i) for i in range(5)}, 1000, 0, max_tokens=5)
    assert full.add == [] and full.over_limit == 5 and full.retire == []


def test_leases_on_configured_tokens_do_not_count_against_the_limit() -> None:
    """A lease on a configured token is neither added nor counted as over the limit."""
    plan = plan_interest({"1": 9000.0, "2": 9000.0}, {"1"}, set(), 1000, 0, max_tokens=1)
    assert plan.add == ["2"] and plan.over_limit == 0


def test_a_lease_longer_than_the_maximum_is_clamped_and_expires_as_the_maximum() -> None:
    """A lease of ~10⁸ days is lowered to now + max, and lapses like one of that length."""
    huge = 1000 + 8.64e15
    plan = plan_interest({"5": huge, "6": 1500.0}, set(), set(), 1000, 0, max_lease_ms=3000)
    assert plan.clamp == {"5": 4000.0}
    assert plan.add == ["5", "6"]
    later = plan_interest({"5": huge}, set(), {"5"}, 5000, 500, max_lease_ms=3000)
    assert later.clamp == {"5": 8000.0} and later.retire == []
    # Once clamped in Redis (score 4000), nobody renews it: it retires after the grace.
    assert plan_interest({"5": 4000.0}, set(), {"5"}, 4600, 500, max_lease_ms=3000).retire == ["5"]


def test_invalid_members_are_reported_whatever_their_score() -> None:
    """Non-token members are reported for removal even when expired, carried or long."""
    leases = {"abc": 9e12, "": 2000.0, "12a": 1.0, "٣": 2000.0, "7": 2000.0}
    plan = plan_interest(leases, set(), set(), 1000, 0, max_lease_ms=1e12)
    assert sorted(plan.invalid) == sorted(["abc", "", "12a", "٣"])
    assert plan.add == ["7"] and plan.clamp == {}


def test_an_unread_lease_does_not_retire_its_token() -> None:
    """When the read was capped, a carried token whose lease was not read stays carried."""
    assert plan_interest({}, set(), {"5"}, 2000, 0, complete=False).retire == []
    assert plan_interest({"5": 1.0}, set(), {"5"}, 2000, 0, complete=False).retire == ["5"]


def test_zero_max_tokens_carries_no_lease() -> None:
    """POLYBUS_MAX_LEASED_TOKENS=0 turns dynamic interest off: every live lease is counted."""
    plan = plan_interest({"1": 9000.0, "2": 9000.0}, set(), set(), 1000, 0, max_tokens=0)
    assert plan.add == [] and plan.over_limit == 2


@contextlib.asynccontextmanager
async def leasing_feeder(
    redis_server: RedisServer,
    sim: Simulator,
    connect: Callable[..., Any] | None = None,
    **options: Any,
) -> AsyncIterator[Feeder]:
    """A feeder with no configured tokens that carries what `pm:interest` asks for."""
    config = FeederConfig(
        ws_url=sim.ws_url,
        redis_url=redis_server.url,
        feeder_id="lease",
        **{**FAST, "interest_interval": 0.1, **options},
    )  # type: ignore[arg-type]
    feeder = Feeder(config, connect=connect)
    task = asyncio.create_task(feeder.run())
    try:
        yield feeder
    finally:
        feeder.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A running simulator with 25 markets (50 tokens)."""
    simulator = Simulator(SimConfig(markets=25, seed=3, rate=50.0))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def test_hostile_leases_are_bounded_clamped_and_cleaned_once(redis_server, sim) -> None:
    """2,000 near-eternal leases plus garbage members: the feeder carries at most the limit,
    lowers the scores to the maximum lease, removes the garbage once and counts it all."""
    redis = redis_server.client()
    key = keys.interest()
    eternal = time.time() * 1000 + 1e8 * 86_400_000  # ~10⁸ days
    hostile = {str(9_000_000 + i): eternal for i in range(2000)}
    await redis.zadd(key, hostile)
    await redis.zadd(key, {"abc": eternal, "12 ": eternal, b"\xff\xfe": eternal})  # type: ignore[dict-item]
    with capture_logs() as logs:
        async with leasing_feeder(
            redis_server, sim, max_leased_tokens=30, max_lease_s=5.0, tokens_per_connection=10
        ) as feeder:
            await wait_for(lambda: len(feeder.dynamic) == 30, 10, "30 leased tokens carried")
            await wait_for(lambda: feeder.interest.invalid_removed == 3, 5, "garbage removed")
            assert await redis.zscore(key, "abc") is None
            assert await redis.zcard(key) == 2000
            top = await redis.zrange(key, -1, -1, withscores=True)
            assert top[0][1] <= time.time() * 1000 + 5000, "every lease lowered to the maximum"
            assert feeder.interest.clamped == 2000 and feeder.interest.over_limit == 1970
            polls = 0

            def more_polls() -> bool:
                nonlocal polls
                polls += 1
                return polls > 10 and feeder.interest.over_limit == 1970

            await wait_for(more_polls, 5, "several more polls", interval=0.1)
            assert len(feeder.carried()) == 30 and len(feeder.connections) == 3
            assert feeder.interest.leased == 30
            registry = CollectorRegistry(auto_describe=False)
            registry.register(FeederCollector(feeder))
            text = generate_latest(registry).decode()
            assert 'polybus_interest_ignored{reason="over_limit"} 1970.0' in text
            assert "polybus_interest_clamped_total 2000.0" in text
            assert "polybus_interest_invalid_removed_total 3.0" in text
    removed = [e for e in logs if e["event"] == "feeder.interest.invalid_removed"]
    assert len(removed) == 1 and removed[0]["count"] == 3, "reported once, not every poll"
    assert any(e["event"] == "feeder.interest.bounded" for e in logs)
    await redis.aclose()


async def test_clamped_leases_lapse_and_retire(redis_server, sim) -> None:
    """A lease of ~10⁸ days, once clamped to the maximum, expires and its token is retired."""
    redis = redis_server.client()
    token = sim.engine.tokens()[0]
    await redis.zadd(keys.interest(), {token: time.time() * 1000 + 8.64e15})
    async with leasing_feeder(redis_server, sim, max_lease_s=1.0, interest_grace=0.5) as feeder:
        await wait_for(lambda: token in feeder.dynamic, 10, "the leased token carried")
        await wait_for(lambda: token not in feeder.carried(), 10, "the clamped lease lapsed")
    await redis.aclose()


def recording(times: list[float]) -> Callable[..., Any]:
    """A websockets connect that notes when each socket is opened."""

    async def connect(*args: Any, **kwargs: Any) -> Any:
        times.append(time.monotonic())
        return await ws_connect(*args, **kwargs)

    return connect


async def test_leased_connections_open_staggered(redis_server, sim) -> None:
    """Forty leased tokens at five per connection open eight sockets `connect_stagger` apart."""
    redis = redis_server.client()
    tokens = sim.engine.tokens()[:40]
    await redis.zadd(keys.interest(), dict.fromkeys(tokens, time.time() * 1000 + 60_000))
    opened: list[float] = []
    async with leasing_feeder(
        redis_server, sim, tokens_per_connection=5, connect_stagger=0.15, connect=recording(opened)
    ) as feeder:
        await wait_for(lambda: len(opened) >= 8, 10, "eight sockets opened")
        gaps = [b - a for a, b in itertools.pairwise(opened[:8])]
        assert min(gaps) >= 0.14, f"sockets opened {gaps} apart"
        assert len(feeder.connections) == 8
    await redis.aclose()


async def test_read_leases_is_capped_soonest_first_and_survives_non_utf8(redis_server) -> None:
    """At most `limit` leases are read, soonest expiry first, the rest counted; a non-UTF-8
    member comes back as bytes instead of raising; tidying only ever lowers scores."""
    redis = redis_server.client()
    key = keys.interest()
    await redis.zadd(key, {str(i): 1000.0 + i for i in range(8)})
    await redis.zadd(key, {b"\xff": 1000.5})  # type: ignore[dict-item]
    read = await read_leases(redis, key, 0, 5)
    assert read.leases == {"0": 1000.0, "1": 1001.0, "2": 1002.0, "3": 1003.0}
    assert read.undecodable == [b"\xff"] and read.truncated == 4
    await tidy_leases(redis, key, 1001.5, [b"\xff"], {"5": 900.0, "6": 5000.0, "99": 1.0})
    # expired ones and the garbage gone, 5 lowered, 6 not raised, 99 not created
    assert await redis.zrange(key, 0, -1, withscores=True) == [
        ("5", 900.0),
        ("2", 1002.0),
        ("3", 1003.0),
        ("4", 1004.0),
        ("6", 1006.0),
        ("7", 1007.0),
    ]
    await redis.aclose()

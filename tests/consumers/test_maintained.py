"""`polybus book`, `top` and `health` judge who maintains a book by the one rule
(wire/maintained.py): the writer holds the live lease of the token's partition; older
feeders (no `P:partitions`) by the writer's health key."""

from __future__ import annotations

import time

import orjson

from polybus.consumers.cli import book_lines
from polybus.consumers.health import check, text_lines
from polybus.consumers.top import maintainers, snapshot, table
from polybus.consumers.writers import verdicts
from polybus.wire import keys
from polybus.wire.maintained import HANDOVER, MAINTAINED, UNKNOWN, UNMAINTAINED
from polybus.wire.partitions import partition_of
from tests.consumers.test_cli import polybus


T1, T2 = "1001", "2002"
COUNT = 16
CONN_OK = [{"id": 0, "state": "subscribed", "silence_s": 0.5}]


async def book(redis, token: str, writer: str, fence: str = "1") -> None:
    """A synced book hash as a partitioned feeder writes it."""
    await redis.hset(
        keys.book(token),
        mapping={
            "status": "synced",
            "writer": writer,
            "fence": fence,
            "seq": "3",
            "last_id": "1-3",
            "bid:0.48": "10",
            "ask:0.52": "5",
        },
    )


async def lease(redis, token: str, value: str, px: int = 60_000) -> None:
    await redis.set(keys.lease(partition_of(token, COUNT)), value, px=px)


async def feeder(
    redis, name: str, *, led: str = "", carrying: str = "", member_ms: int = 60_000
) -> None:
    """A live feeder: health hash and membership (expiry on the server's clock)."""
    sec, usec = await redis.time()
    await redis.zadd(keys.members(), {name: sec * 1000 + usec // 1000 + member_ms})
    await redis.hset(
        keys.feeder(name),
        mapping={
            "state": "ok",
            "connections": orjson.dumps(CONN_OK).decode(),
            "tokens": "0",
            "synced": "0",
            "updated_ms": str(int(time.time() * 1000)),
            "interval_ms": "2000",
            "partitions": str(COUNT),
            "lease_ms": "3000",
            "led": led,
            "carrying": carrying,
            "warm": carrying,
        },
    )


async def test_book_and_top_apply_the_lease_rule(redis_server) -> None:
    """Writer holding the lease: maintained; another holder: hand-over; no lease: unmaintained
    — the same verdict in `book`'s line, `top`'s writer column and its title."""
    redis = redis_server.client()
    await redis.set(keys.partitions(), str(COUNT))
    assert partition_of(T1, COUNT) != partition_of(T2, COUNT)
    await book(redis, T1, "a")
    await book(redis, T2, "a")
    await lease(redis, T1, "1:a")
    got = await verdicts(
        redis, "pm", {T1: {"writer": "a", "fence": "1"}, T2: {"writer": "a", "fence": "1"}}
    )
    assert (got[T1].state, got[T2].state) == (MAINTAINED, UNMAINTAINED)
    fields = await redis.hgetall(keys.book(T1))
    line = book_lines(T1, fields, 5, got[T1])[1]
    assert line.endswith(f"maintained: writer a holds lease p{partition_of(T1, COUNT)} fence 1")
    await lease(redis, T1, "2:b")
    code, out, _ = await polybus("book", T1, "--redis-url", redis_server.url)
    assert code == 0 and "handover: hand-over in progress: b holds lease" in out
    code, out, _ = await polybus("book", T2, "--redis-url", redis_server.url)
    assert code == 0 and "unmaintained: no live lease on p" in out
    rows = await snapshot(redis, "pm")
    writers = await maintainers(redis, "pm", rows)
    assert {t: v.state for t, v in writers.items()} == {T1: HANDOVER, T2: UNMAINTAINED}
    assert "1 synced but unmaintained" in str(table(rows, {}, 10, writers).title)
    code, out, _ = await polybus("top", "--once", "--redis-url", redis_server.url)
    assert code == 0 and "handover" in out and "NONE" in out and "unmaintained" in out
    await redis.aclose()


async def test_garbage_partition_and_lease_keys_read_as_no_lease(redis_server) -> None:
    """A lease key of another type, a garbage lease or partition count: unmaintained, no crash."""
    redis = redis_server.client()
    await redis.set(keys.partitions(), str(COUNT))
    await book(redis, T1, "a")
    await book(redis, T2, "a")
    await redis.hset(keys.lease(partition_of(T1, COUNT)), "x", "1")  # WRONGTYPE for GET
    await lease(redis, T2, "garbage")
    books = {T1: {"writer": "a"}, T2: {"writer": "a"}}
    got = await verdicts(redis, "pm", books)
    assert got[T1].state == got[T2].state == UNMAINTAINED
    assert "garbage" in got[T1].reason and "garbage" in got[T2].reason
    await redis.delete(keys.partitions())
    await redis.hset(keys.partitions(), "x", "1")
    got = await verdicts(redis, "pm", books)
    assert got[T1].state == UNMAINTAINED and "not a partition count" in got[T1].reason
    report = await check(redis, "pm", 90, 30_000)
    assert any("not a partition count" in p for p in report.problems)
    await redis.aclose()


async def test_without_partitions_the_writers_health_key_decides(redis_server) -> None:
    """An older feeder's prefix: the writer's health key present or gone, as before."""
    redis = redis_server.client()
    await book(redis, T1, "old")
    await redis.hset(keys.book(T2), mapping={"status": "synced"})
    await redis.hset(keys.feeder("old"), mapping={"state": "ok"})
    code, out, _ = await polybus("book", T1, "--redis-url", redis_server.url)
    assert code == 0 and "maintained: writer old ok" in out
    got = await verdicts(redis, "pm", {T1: {"writer": "old"}, T2: {}})
    assert (got[T1].state, got[T2].state) == (MAINTAINED, UNKNOWN)
    await redis.delete(keys.feeder("old"))
    got = await verdicts(redis, "pm", {T1: {"writer": "old"}})
    assert got[T1].state == UNMAINTAINED and "GONE" in got[T1].reason
    report = await check(redis, "pm", 90, 30_000)
    assert report.partitions == [] and report.partition_count == 0
    await redis.aclose()


async def test_health_shows_leaders_standbys_fences_and_lease_ages(redis_server) -> None:
    """Each carried partition's leader, fence, lease age and standbys, in text and JSON;
    healthy while every carried partition has a leader and a standby."""
    redis = redis_server.client()
    await redis.set(keys.partitions(), "2")
    await feeder(redis, "a", led="0", carrying="0,1")
    await feeder(redis, "b", led="1", carrying="0,1")
    await redis.set(keys.lease(0), "4:a", px=3000)
    await redis.set(keys.lease(1), "9:b", px=2000)
    report = await check(redis, "pm", 90, 30_000)
    assert report.healthy and not report.warnings, (report.problems, report.warnings)
    p0, p1 = report.partitions
    assert (p0["leader"], p0["fence"], p0["standbys"]) == ("a", 4, ["b"])
    assert (p1["leader"], p1["fence"], p1["standbys"]) == ("b", 9, ["a"])
    assert 0 <= p0["lease_age_ms"] < 500 and 1000 <= p1["lease_age_ms"] < 1500
    lines = text_lines(report)
    assert lines[0].startswith("healthy") and "partitions=2" in lines
    assert any(
        line.split()[:6] == ["p1", "leader", "b", "fence", "9", "lease"]
        and line.endswith("standbys a")
        for line in lines
    )
    for p, lease in ((0, "4:a"), (1, "9:b")):  # alive however slowly the command starts
        await redis.set(keys.lease(p), lease, px=60_000)
    code, out, _ = await polybus("health", "--json", "--redis-url", redis_server.url)
    assert code == 0 and orjson.loads(out)["partitions"][0]["standbys"] == ["b"]
    await redis.aclose()


async def test_health_fails_a_carried_partition_without_leader_and_warns_without_standby(
    redis_server,
) -> None:
    """No lease on a partition a live member carries: exit 1 naming it; a leader alone with
    no standby: a warning and exit 0; a member whose membership expired carries nothing."""
    redis = redis_server.client()
    await redis.set(keys.partitions(), "2")
    await feeder(redis, "a", led="0", carrying="0,1")
    # leases that outlive the test: two `polybus health` processes may take seconds to start
    # on a loaded machine, and a lapsed lease is another finding
    await redis.set(keys.lease(0), "4:a", px=60_000)
    report = await check(redis, "pm", 90, 30_000)
    assert report.problems == ["partition 1 has no leader: carried by a, nobody writes its tokens"]
    code, out, _ = await polybus("health", "--redis-url", redis_server.url)
    assert code == 1 and "p1   NO LEADER  standbys a" in out
    await redis.set(keys.lease(1), "5:a", px=60_000)
    await feeder(redis, "gone", carrying="0,1", member_ms=-1000)
    code, out, _ = await polybus("health", "--redis-url", redis_server.url)
    assert code == 0, out
    assert "warning: no standby for partition(s) 0,1" in out
    await redis.aclose()

"""Redundant feeders (issue 13) with real processes: one writer per token, takeovers that lose
nothing, fencing of a paused leader, rolling restarts and partitions shared by four feeders."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from polybus.consumers import MarketFeed
from polybus.simulator import SimConfig, Simulator
from polybus.wire import keys
from polybus.wire.partitions import partition_of
from tests.e2e.feeders import LEASE_MS, FeederProc, health_of, leaders, stop_all, warm_of
from tests.e2e.harness import assert_redis_equals_truth
from tests.support import RedisServer, wait_for


pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def market(markets: int = 4) -> AsyncIterator[Simulator]:
    sim = Simulator(
        SimConfig(markets=markets, seed=13, rate=150.0, new_market_every=0.0, resolve_every=0.0)
    )
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    try:
        yield sim
    finally:
        await sim.stop()


def emitted(sim: Simulator) -> dict[str, list[tuple[float, str]]]:
    """Record every book hash the exchange stamps, per token, with when (monotonic)."""
    engine = sim.engine
    seen: dict[str, list[tuple[float, str]]] = {}
    real = engine._hashes

    def hashes(m, *args):  # type: ignore[no-untyped-def]
        out = real(m, *args)
        now = time.monotonic()
        seen.setdefault(m.yes, []).append((now, out[0]))
        seen.setdefault(m.no, []).append((now, out[1]))
        return out

    engine._hashes = hashes  # type: ignore[method-assign]
    return seen


async def led_by(redis, names: set[str], partitions: set[int], timeout: float) -> None:
    async def held() -> bool:
        now = await leaders(redis)
        return all(now.get(p) in names for p in partitions)

    await wait_for(
        held, timeout, f"partitions {sorted(partitions)} led by {sorted(names)}", interval=0.02
    )


async def warm(redis, name: str, partitions: set[int], timeout: float = 20) -> None:
    async def ready() -> bool:
        return partitions <= warm_of(await health_of(redis, name))

    await wait_for(ready, timeout, f"{name} warm for {sorted(partitions)}", interval=0.05)


def used(tokens: list[str]) -> set[int]:
    return {partition_of(t, 16) for t in tokens}


async def stream_of(redis, token: str) -> list[dict[str, str]]:
    return [f for _, f in await redis.xrange(keys.stream(token))]


def contiguous(entries: list[dict[str, str]]) -> bool:
    seqs = [int(f["seq"]) for f in entries]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_two_feeders_started_together_one_writes_each_token_no_thrash(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Started at the same instant: every partition has one leader from the start, the
    leaders never change, each book's writer is its partition's leader, books equal truth."""
    redis = redis_server.client()
    async with market() as sim:
        tokens = sim.engine.tokens()
        procs = [FeederProc(n, sim, redis_server.url, tmp_path) for n in ("a", "b")]
        try:
            await asyncio.gather(*(p.start() for p in procs))
            await led_by(redis, {"a", "b"}, set(range(16)), 20)
            first = await leaders(redis)
            for name in ("a", "b"):
                await warm(redis, name, used(tokens))
            await asyncio.sleep(0.01)
            for _ in range(40):  # 2 s of flow: nobody takes anything from anybody
                assert await leaders(redis) == first
                await asyncio.sleep(0.05)
            await assert_redis_equals_truth(sim, redis, tokens)
            for token in tokens:
                book = await redis.hgetall(keys.book(token))
                assert book["writer"] == first[partition_of(token, 16)]
                entries = await stream_of(redis, token)
                assert contiguous(entries)
                assert "failover" not in {f.get("state") for f in entries}
        finally:
            await stop_all(procs)


async def test_a_killed_leader_is_replaced_within_the_lease_and_no_event_is_lost(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGKILL the leader: the warm standby leads within POLYBUS_LEASE_MS + 1 s, replays what
    the leader missed (no exchange event missing from the streams), seq stays contiguous, the
    books equal truth and a MarketFeed never fires on_disconnect."""
    redis = redis_server.client()
    async with market() as sim:
        seen = emitted(sim)
        tokens = sim.engine.tokens()
        a = await FeederProc("a", sim, redis_server.url, tmp_path).start()
        procs = [a]
        feed = MarketFeed(redis_server.url)
        disconnects: list[int] = []
        feed.on_disconnect = lambda: disconnects.append(1)
        try:
            await led_by(redis, {"a"}, set(range(16)), 20)
            procs.append(b := await FeederProc("b", sim, redis_server.url, tmp_path).start())
            await warm(redis, "b", used(tokens))
            assert await feed.connect() and await feed.subscribe(tokens)
            await wait_for(
                lambda: all(feed.get_order_book(t).status == "synced" for t in tokens),
                15,
                "the consumer's books synced",
            )
            window = time.monotonic()
            a.send(signal.SIGKILL)
            killed = time.monotonic()
            await led_by(redis, {"b"}, set(range(16)), LEASE_MS / 1000 + 1.0)
            took = time.monotonic() - killed
            await asyncio.sleep(1.0)  # flow goes on under the new leader
            end = time.monotonic()
            await assert_redis_equals_truth(sim, redis, tokens)
            missing = 0
            for token in tokens:
                entries = await stream_of(redis, token)
                assert contiguous(entries), token
                written = {f.get("hash") for f in entries}
                missing += sum(
                    h not in written for t, h in seen.get(token, ()) if window <= t <= end
                )
            assert missing == 0, f"{missing} exchange events missing after a {took:.2f}s takeover"
            assert b.proc is not None and b.proc.returncode is None
            states = {f.get("state") for t in tokens for f in await stream_of(redis, t)}
            assert "failover" in states
            assert disconnects == []
        finally:
            await feed.disconnect()
            await stop_all(procs)


async def test_a_paused_leader_never_writes_after_its_successor(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGSTOP past the lease, then SIGCONT: the fence refuses every write of the old leader
    (no event written twice after the failover), it steps down, and the books stay true."""
    redis = redis_server.client()
    async with market() as sim:
        tokens = sim.engine.tokens()
        a = await FeederProc("a", sim, redis_server.url, tmp_path).start()
        procs = [a]
        try:
            await led_by(redis, {"a"}, set(range(16)), 20)
            procs.append(await FeederProc("b", sim, redis_server.url, tmp_path).start())
            await warm(redis, "b", used(tokens))
            a.send(signal.SIGSTOP)
            await led_by(redis, {"b"}, set(range(16)), LEASE_MS / 1000 + 1.5)
            await asyncio.sleep(0.5)
            a.send(signal.SIGCONT)

            async def stepped_down() -> bool:
                return (await health_of(redis, "a")).get("led", "x") == ""

            await wait_for(stepped_down, 10, "the old leader to lead nothing")
            await asyncio.sleep(0.5)
            await assert_redis_equals_truth(sim, redis, tokens)
            for token in tokens:
                entries = await stream_of(redis, token)
                assert contiguous(entries)
                marks = [i for i, f in enumerate(entries) if f.get("state") == "failover"]
                after = entries[marks[-1] :] if marks else []
                written = [
                    (f["ts"], f["hash"], f["side"], f["price"], f["size"])
                    for f in after
                    if f["type"] == "price_change"
                ]
                dup = [w for w in written if written.count(w) > 1]
                assert not dup, f"{token}: written twice after the failover: {dup[:4]}"
                assert all(f.get("writer") in (None, "b") for f in after), token
            assert await leaders(redis) == dict.fromkeys(range(16), "b")
        finally:
            await stop_all(procs)


async def test_a_rolling_restart_of_three_feeders_turns_no_book_suspect(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGTERM, restart, next: leases hand over in milliseconds, and a consumer's books are
    synced at every look, with no on_disconnect."""
    redis = redis_server.client()
    async with market(markets=6) as sim:
        tokens = sim.engine.tokens()
        procs = [
            await FeederProc(n, sim, redis_server.url, tmp_path).start() for n in ("a", "b", "c")
        ]
        feed = MarketFeed(redis_server.url)
        disconnects: list[int] = []
        feed.on_disconnect = lambda: disconnects.append(1)
        bad: list[str] = []
        changes: list[str] = []  # why a book left synced, for the failure message
        feed.on_status = lambda p: changes.append(
            f"{p['asset_id'][:8]} {p['previous']}->{p['status']} {p['state']} {p['reason']}"
        )
        try:
            await led_by(redis, {"a", "b", "c"}, set(range(16)), 20)
            for proc in procs:
                await settled(redis, proc.name, tokens)
            assert await feed.connect() and await feed.subscribe(tokens)
            await wait_for(
                lambda: all(feed.get_order_book(t).status == "synced" for t in tokens),
                15,
                "the consumer's books synced",
            )
            watching = True

            async def watch() -> None:
                while watching:
                    bad.extend(t for t in tokens if feed.get_order_book(t).status != "synced")
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            for i, proc in enumerate(list(procs)):
                assert await proc.stop() == 0
                procs[i] = await FeederProc(proc.name, sim, redis_server.url, tmp_path).start()
                await led_by(redis, {"a", "b", "c"}, set(range(16)), 5)
                await settled(redis, proc.name, tokens)
            watching = False
            await watcher
            left = [c for c in changes if "->synced " not in c]
            assert bad == [] and disconnects == [], (
                f"{len(set(bad))} books left synced: {left or changes[-12:]}"
            )
            await assert_redis_equals_truth(sim, redis, tokens)
        finally:
            await feed.disconnect()
            await stop_all(procs)


def warm_carrying(health: dict[str, str]) -> set[int]:
    return {int(p) for p in health.get("carrying", "").split(",") if p.isdigit()}


async def settled(redis, name: str, tokens: list[str], timeout: float = 20) -> None:
    """The feeder is up and warm for every partition it carries that holds tokens."""

    async def ready() -> bool:
        health = await health_of(redis, name)
        carrying = warm_carrying(health) & used(tokens)
        return bool(carrying) and carrying <= warm_of(health)

    await wait_for(ready, timeout, f"{name} settled", interval=0.05)


async def test_four_feeders_share_the_partitions_and_a_kill_rehomes_them(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Four feeders, 16 partitions, two replicas: each carries about half; one killed, its
    partitions get new carriers and none is left without a leader beyond a lease."""
    redis = redis_server.client()
    async with market(markets=24) as sim:
        tokens = sim.engine.tokens()
        names = ("a", "b", "c", "d")
        procs = [await FeederProc(n, sim, redis_server.url, tmp_path).start() for n in names]
        try:

            async def shared() -> bool:
                carrying = [warm_carrying(await health_of(redis, n)) for n in names]
                return all(len(c) == 8 for c in carrying)

            await wait_for(shared, 30, "each feeder to carry 8 partitions", interval=0.1)
            await led_by(redis, set(names), set(range(16)), 5)
            procs[0].send(signal.SIGKILL)
            await procs[0].stop(signal.SIGKILL)
            await led_by(redis, set(names[1:]), set(range(16)), LEASE_MS / 1000 + 1.0)

            async def rehomed() -> bool:
                loads = [len(warm_carrying(await health_of(redis, n))) for n in names[1:]]
                return sum(loads) == 32 and max(loads) - min(loads) <= 2

            await wait_for(rehomed, 30, "the survivors to carry everything twice", interval=0.1)
            await assert_redis_equals_truth(sim, redis, tokens)
        finally:
            await stop_all(procs)

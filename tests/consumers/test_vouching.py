"""MarketFeed stops vouching in time: a Redis that stops answering (SIGSTOP) within the
health interval, a stream trimmed past a quiet token's cursor within one audit interval."""

from __future__ import annotations

import signal
import time
from typing import Any

from polybus.consumers import ConnectionState, MarketFeed
from polybus.consumers.feed import AUDIT_SLICE
from polybus.feeder.outbox import Batch
from polybus.wire import keys
from polybus.wire.events import PriceChange
from tests.consumers.bus import T1, T2, Bus
from tests.support import RedisServer, wait_for


async def test_a_stalled_redis_stops_vouching_within_the_health_interval(
    redis_server: RedisServer,
) -> None:
    """SIGSTOP on redis-server: on_disconnect (books suspect) within the health interval —
    socket timeouts, not a hang — and on_connect again once it answers (SIGCONT)."""
    bus = Bus(redis_server.client())
    await bus.book(T1)
    feed = MarketFeed(redis_server.url)  # the defaults: health interval 1 s, XREAD block 0.5 s
    seen: list[tuple[str, float, str]] = []
    feed.on_disconnect = lambda: seen.append(
        ("disconnect", time.monotonic(), feed.get_order_book(T1).status)
    )
    feed.on_connect = lambda: seen.append(("connect", time.monotonic(), ""))
    assert await feed.connect() and await feed.subscribe([T1])
    assert redis_server.proc is not None
    stopped = time.monotonic()
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        await wait_for(lambda: len(seen) >= 2, 10, "on_disconnect")
        name, at, status = seen[1]
        assert name == "disconnect" and status == "suspect"
        assert at - stopped <= 1.0 + 0.5, f"{at - stopped:.2f}s to stop vouching"
        assert feed.state is ConnectionState.RECONNECTING
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    await wait_for(lambda: seen[-1][0] == "connect", 15, "on_connect after SIGCONT")
    assert feed.get_order_book(T1).status == "synced"
    await feed.disconnect()
    await bus.redis.aclose()


async def burst_then_trim(bus: Bus, token: str, n: int) -> None:
    """n entries through the feeder's Lua step and a trim to nothing, in one MULTI/EXEC: a
    blocked XREAD never sees them, only the hash's seq tells."""
    batch = Batch()
    for i in range(n):
        batch.add(
            PriceChange(token, bus.stamp(), "bid", "0.3", str(i + 1), "", "", "h"),
            1,
            time.time_ns() // 1000,
        )
    publisher = bus.publisher
    await publisher.load()
    pipe = bus.redis.pipeline(transaction=True)
    for tok, args in batch.entries.items():
        pipe.evalsha(publisher._sha or "", *publisher._script_args(tok, args, 0))
    pipe.xtrim(keys.stream(token), maxlen=0)
    await pipe.execute()


async def test_a_trim_past_a_just_active_token_is_caught_within_one_audit_interval(
    redis_server: RedisServer,
) -> None:
    """A token that delivered an entry just after an audit, then had entries added and
    trimmed away unseen, is suspect within one audit interval of the trim (not two)."""
    bus = Bus(redis_server.client())
    await bus.book(T1)
    await bus.book(T2)
    interval = 2.0
    feed = MarketFeed(redis_server.url, audit_interval=interval, block_ms=100)
    changes: list[str] = []
    suspect_at: list[float] = []
    feed.on_price_change = lambda d: changes.append(d["size"])

    def on_status(d: dict[str, Any]) -> None:
        if d["asset_id"] == T1 and d["status"] == "suspect":
            suspect_at.append(time.monotonic())

    feed.on_status = on_status
    assert await feed.connect() and await feed.subscribe([T1, T2])
    audit = feed._next_audit
    await wait_for(lambda: feed._next_audit != audit, 10, "an audit to have just run")
    await bus.change(T1, "0.45", "5")  # T1 is active in this audit interval
    await wait_for(lambda: "5" in changes, 5, "T1's change")
    await burst_then_trim(bus, T1, 10)
    trimmed = time.monotonic()
    await wait_for(lambda: bool(suspect_at), 3 * interval, "T1 suspect")
    assert suspect_at[0] - trimmed <= interval + 0.5, f"{suspect_at[0] - trimmed:.2f}s"
    await wait_for(lambda: feed.get_order_book(T1).status == "synced", 5, "T1 reloaded")
    bids = [(lv.price_str, lv.size_str) for lv in feed.get_order_book(T1).bids]
    assert ("0.3", "10") in bids, "the reload brought the burst that XREAD never saw"
    await feed.disconnect()
    await bus.redis.aclose()


async def test_many_tokens_are_audited_in_slices_each_once_per_interval(
    redis_server: RedisServer,
) -> None:
    """With more tokens than AUDIT_SLICE, the audit reads at most AUDIT_SLICE hashes at a
    time (no round stalls on all of them) and still covers every token once per interval."""
    tokens = [str(5000 + i) for i in range(2 * AUDIT_SLICE + 50)]
    interval = 1.0
    feed = MarketFeed(redis_server.url, audit_interval=interval, block_ms=100)
    audited: list[tuple[float, list[str]]] = []
    real = feed._reader.audit

    async def audit(redis: Any, among: Any = None) -> Any:
        audited.append((time.monotonic(), list(among)))
        return await real(redis, among)

    feed._reader.audit = audit  # type: ignore[method-assign]
    assert await feed.connect() and await feed.subscribe(tokens)
    await wait_for(lambda: len(audited) >= 8, 10, "two rounds of audit slices")
    assert all(len(among) <= AUDIT_SLICE for _, among in audited)
    first = next(i for i, (_, among) in enumerate(audited) if among and among[0] == tokens[0])
    cycle = audited[first : first + 3]
    assert sorted(t for _, among in cycle for t in among) == sorted(tokens)
    assert cycle[-1][0] - cycle[0][0] <= interval, "one interval covers every token"
    await feed.disconnect()

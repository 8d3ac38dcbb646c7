"""The feeder process: shards, the publisher loop, the health key, the stats line.

Redis failures never stop the feed: the publisher waits for Redis to come back, then marks
every book suspect and asks every connection for fresh snapshots (the events in between were
never written, and a snapshot replaces them all).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from feeder.config import FeederConfig
from feeder.connection import Connection, backoff_delay
from feeder.gamma import Discovery
from feeder.interest import InterestStats, next_stats, plan_interest
from feeder.leases import read_leases, tidy_leases
from feeder.metrics import serve_metrics
from feeder.mirror import Mirror
from feeder.outbox import Outbox
from feeder.publisher import Publisher
from feeder.recorder import Recorder
from feeder.rest import RestBooks
from polybus import __version__
from wire import keys
from wire.errors import BackendError
from wire.events import MarketEvent


__all__ = ["Feeder"]

log = structlog.get_logger("feeder.app")


class Feeder:
    """Runs connections for all configured tokens and publishes what they receive."""

    interest: InterestStats = InterestStats()
    """The interest loop's counters (frozen, replaced per poll: safe as a class default)."""
    _opens_at: float = 0.0
    """Monotonic time before which `carry` opens no new connection (the stagger)."""

    def __init__(
        self,
        config: FeederConfig,
        *,
        redis: aioredis.Redis | None = None,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        self.config = config
        self.redis = redis or aioredis.Redis.from_url(
            config.redis_url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10
        )
        self.outbox = Outbox(config.outbox_capacity)
        self.mirror = Mirror()
        self.publisher = Publisher(self.redis, prefix=config.prefix, maxlen=config.stream_maxlen)
        epochs = itertools.count(1)
        self.recorder = Recorder(config.record) if config.record else None
        self.rest = RestBooks(config.clob_url)
        self.counts: Counter[str] = Counter()
        """Normalizer counters of every connection this feeder ever ran (never go backwards)."""
        self.ladder: Counter[str] = Counter()
        """Resync-ladder rungs and adoptions of connections that are gone."""
        extra: dict[str, Any] = {"connect": connect} if connect else {}
        if self.recorder is not None:
            extra["recorder"] = self.recorder
        self._extra = extra
        self._next_epoch = lambda: next(epochs)
        self._cids = itertools.count()
        size = config.tokens_per_connection
        tokens = list(config.tokens)
        self.connections: list[Connection] = []
        for at in range(0, len(tokens), size):
            self._new_connection(tokens[at : at + size])
        self.published = 0
        self.batches = 0
        self.batch_seconds = 0.0
        self.redis_ok = True
        self.started = time.time()
        self._stop = asyncio.Event()
        self._rng = random.Random()
        self._tasks: list[asyncio.Task[None]] = []
        self._fatal: asyncio.Future[None] | None = None
        self.dynamic: set[str] = set()
        """Tokens carried because a consumer leased them, not because they were configured."""
        self.discovery = Discovery(self, config) if config.top else None
        self.meta: dict[str, dict[str, str]] = {}
        self._meta_dirty: set[str] = set()

    def carried(self) -> list[str]:
        """Every token on some connection: configured and leased (once, though a token being
        handed over is subscribed on two)."""
        return list(dict.fromkeys(t for conn in self.connections for t in conn.tokens))

    def _new_connection(self, tokens: list[str], adopting: tuple[str, ...] | list[str] = (),
                        moved: bool = False) -> Connection:
        conn = Connection(next(self._cids), tokens, self.config, self.outbox, self.mirror,
                          self._next_epoch, rest=self.rest, adopting=adopting, moved=moved,
                          counts=self.counts, **self._extra)
        conn.on_market = self._on_market
        conn.on_move = self._on_move
        conn.on_adopted = self._on_adopted
        conn.on_recycle = self._on_recycle
        self.connections.append(conn)
        return conn

    # --- handovers: a fresh connection adopts, the old one releases ---------------------------
    def _on_move(self, conn: Connection, tokens: list[str]) -> None:
        """Rung 3: a socket that never delivered these tokens hands them to a fresh one."""
        fresh = self._new_connection([], adopting=tokens, moved=True)
        self.ladder["moves"] += 1
        if self._fatal is not None:
            self._spawn(fresh, self.config.connect_stagger)

    def _on_recycle(self, conn: Connection) -> None:
        """Make before break: a successor adopts every token; the old socket closes once the
        successor has a fresh book of each (no book turns suspect)."""
        successor = self._new_connection([], adopting=conn.tokens)
        conn.successor = successor
        self.ladder["recycles"] += 1
        if self._fatal is not None:
            self._spawn(successor, 0.0)

    def ladder_counts(self) -> dict[str, int]:
        """Rungs climbed (`ladder.resubscribe|rest|move|gave_up`), adoptions, stale REST
        books, moves and recycles, over every connection this feeder ran."""
        total = Counter(self.ladder)
        for conn in self.connections:
            total.update(conn.subs.counts)
        return dict(total)

    def _on_adopted(self, conn: Connection, tokens: list[str]) -> None:
        for other in self.connections:
            if other is not conn:
                other.release(tokens)

    def stop(self) -> None:
        """Ask the feeder to flush and exit (what SIGTERM/SIGINT do)."""
        self._stop.set()

    async def run(self) -> int:
        """Run until stopped (exit code 0) or a connection gives up (exit code 1)."""
        loop = asyncio.get_running_loop()
        log.info("feeder.start", feeder_id=self.config.feeder_id, tokens=len(self.config.tokens),
                 connections=len(self.connections), ws_url=self.config.ws_url)
        await self._wait_for_redis()
        metrics = None
        if self.config.metrics_port:
            metrics = await serve_metrics(self, self.config.metrics_host, self.config.metrics_port)
        self._fatal = fatal = loop.create_future()
        for i, conn in enumerate(list(self.connections)):
            self._spawn(conn, i * self.config.connect_stagger)
        loops = [self._publish_loop(), self._health_loop(), self._stats_loop(),
                 self._interest_loop(), self._check_loop()]
        if self.discovery is not None:
            loops.append(self.discovery.run())
        helpers = [asyncio.create_task(loop) for loop in loops]
        stopper = asyncio.create_task(self._stop.wait())
        everything = [stopper, fatal, *helpers]
        done, _ = await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        for task in done:
            if task is not stopper and task.exception() is not None:
                code = 1
                log.error("feeder.fatal", error=repr(task.exception()))
        tasks = [*self._tasks, *helpers, stopper]
        for task in tasks:
            task.cancel()
        # A task that swallowed its cancellation must not wedge the stop (see _reraise_cancel).
        await asyncio.wait(tasks, timeout=5)
        if metrics is not None:
            metrics.close()
        await self._shutdown()
        return code

    def _spawn(self, conn: Connection, delay: float) -> None:
        task = asyncio.create_task(self._start_staggered(conn, delay))
        task.add_done_callback(self._connection_ended)
        self._tasks.append(task)

    def _connection_ended(self, task: asyncio.Task[None]) -> None:
        """A connection that gave up (attempt limit) ends the process non-zero; one that was
        retired (recycled) just leaves."""
        if task.cancelled() or self._fatal is None or self._fatal.done():
            return
        if task.exception() is not None:
            self._fatal.set_exception(task.exception())  # type: ignore[arg-type]

    async def _start_staggered(self, conn: Connection, delay: float) -> None:
        # Many sockets opened at once draw HTTP 429; open them a little apart.
        await asyncio.sleep(delay)
        try:
            await conn.run()
        finally:
            if conn in self.connections and not conn.tokens:
                self.connections.remove(conn)
                self.ladder.update(conn.subs.counts)

    # --- publishing -----------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        while True:
            batch = await self.outbox.take()
            started = time.perf_counter()
            try:
                broken = await self.publisher.write(batch)
            except BackendError as exc:
                await self._recover_redis(str(exc))
                continue
            finally:
                _reraise_cancel()
            self.batch_seconds += time.perf_counter() - started
            self.batches += 1
            self.published += batch.size
            if broken:  # Redis lost these tokens' state under us (restart, failover, flush)
                self._resync(broken, "redis_lost")

    async def _recover_redis(self, error: str) -> None:
        """Wait for Redis, then resync every book: events since the failure were not written."""
        self.redis_ok = False
        self.outbox.discarding = True
        log.error("feeder.redis.lost", error=error)
        await self._wait_for_redis()
        self.outbox.take_nowait()  # superseded by the fresh snapshots requested below
        self.outbox.discarding = False
        self.publisher.forget()
        self._resync(self.carried(), "redis_lost")
        self._meta_dirty |= set(self.meta)
        log.info("feeder.redis.recovered", discarded=self.outbox.discarded)

    def _resync(self, tokens: list[str], reason: str) -> None:
        """Mark tokens suspect in band and ask the connections owning them for snapshots."""
        for conn in self.connections:
            conn.request_resync(tokens, reason)

    async def _check_loop(self) -> None:
        """Top-of-book checks of runs that went quiet (the mirror waits out sweeps)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.mirror.grace / 3)
            bad = self.mirror.due(loop.time())
            if bad:
                self._resync(bad, "bbo_mismatch")

    async def _wait_for_redis(self) -> None:
        attempt = 0
        while True:
            try:
                await self.redis.ping()
                await self.publisher.load()
                self.redis_ok = True
                return
            except (RedisError, BackendError, OSError) as exc:
                attempt += 1
                delay = max(0.05, backoff_delay(attempt, 0.2, 5.0, self._rng))
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("feeder.redis.waiting", attempt=attempt, error=str(exc))
                await asyncio.sleep(delay)

    # --- dynamic interest -----------------------------------------------------------------
    async def _interest_loop(self) -> None:
        key, cfg = keys.interest(self.config.prefix), self.config
        grace_ms, max_lease_ms = cfg.interest_grace * 1000, cfg.max_lease_s * 1000
        read_limit = max(10_000, 4 * cfg.max_leased_tokens)
        next_report = 0.0
        while True:
            await asyncio.sleep(cfg.interest_interval)
            now_ms = time.time() * 1000
            oldest = now_ms - grace_ms
            try:
                read = await read_leases(self.redis, key, oldest, read_limit)
                plan = plan_interest(read.leases, set(cfg.tokens), self.dynamic, now_ms,
                                     grace_ms, max_tokens=cfg.max_leased_tokens,
                                     max_lease_ms=max_lease_ms, complete=not read.truncated)
                bad: list[str | bytes] = [*plan.invalid, *read.undecodable]
                await tidy_leases(self.redis, key, oldest, bad, plan.clamp)
            except (RedisError, OSError):
                continue
            if bad:  # removed now, so each is reported once
                log.warning("feeder.interest.invalid_removed", count=len(bad),
                            sample=[repr(m)[:40] for m in bad[:5]])
            if plan.add:
                self.dynamic.update(self.carry(plan.add))
            if plan.retire:
                self.retire(plan.retire, "lease_expired")
            self.interest = next_stats(self.interest, plan, leased=len(self.dynamic),
                                       removed=len(bad), truncated=read.truncated)
            if plan.add or plan.retire:
                log.info("feeder.interest", added=len(plan.add), retired=len(plan.retire))
            bounded = plan.over_limit or plan.clamp or read.truncated
            if bounded and time.monotonic() >= next_report:  # periodic, not per poll
                next_report = time.monotonic() + cfg.stats_interval
                log.warning("feeder.interest.bounded", ignored=plan.over_limit,
                            unread=read.truncated, clamped_total=self.interest.clamped,
                            leased=len(self.dynamic), max_tokens=cfg.max_leased_tokens,
                            max_lease_s=cfg.max_lease_s)

    def carry(self, tokens: list[str]) -> list[str]:
        """Put tokens on connections with room, opening new connections when all are full.

        New connections open `connect_stagger` apart, like the configured ones: a burst of
        leases (or a Gamma poll) must not open many sockets at once and draw HTTP 429.
        """
        carried = set(self.carried())
        pending = [t for t in dict.fromkeys(tokens) if t not in carried]
        added: list[str] = []
        size, stagger = self.config.tokens_per_connection, self.config.connect_stagger
        for conn in self.connections:
            room = 0 if conn.retiring else size - len(conn.tokens)
            if room > 0 and pending:
                added += conn.add_tokens(pending[:room])
                pending = pending[room:]
        # run() opens configured connection i at about start + i·stagger: queue behind those,
        # then behind each other.
        configured_wait = -(-len(self.config.tokens) // size) * stagger - (
            time.time() - self.started)
        while pending:
            conn = self._new_connection(pending[:size])
            if self._fatal is not None:
                now = time.monotonic()
                delay = max(0.0, configured_wait, self._opens_at - now)
                self._opens_at = now + delay + stagger
                self._spawn(conn, delay)
            added += conn.tokens
            pending = pending[size:]
        return added

    def describe(self, token: str, **meta: str) -> None:
        """Remember what a token is (question, outcome) for people reading its book hash."""
        self.meta.setdefault(token, {}).update({k: v for k, v in meta.items() if v})
        self._meta_dirty.add(token)

    async def _write_meta(self) -> None:
        """Put described tokens' question/outcome into their book hashes (not stream state)."""
        tokens, self._meta_dirty = self._meta_dirty, set()
        pipe = self.redis.pipeline(transaction=False)
        for token in tokens:
            if self.meta.get(token):
                pipe.hset(keys.book(token, self.config.prefix),
                          mapping=self.meta[token])  # type: ignore[arg-type]
        try:
            await pipe.execute()
        except (RedisError, OSError):
            self._meta_dirty |= tokens

    def retire(self, tokens: list[str], reason: str) -> list[str]:
        """Stop carrying tokens (their books turn retired, then expire: nothing updates them)."""
        gone: list[str] = []
        for conn in self.connections:
            gone += conn.remove_tokens(tokens, reason)
        self.dynamic.difference_update(gone)
        return gone

    def _on_market(self, event: MarketEvent) -> None:
        if self.discovery is not None:
            self.discovery.on_market(event)

    # --- health and stats -----------------------------------------------------------------
    def health(self) -> dict[str, str]:
        """The fields of this feeder's health hash."""
        conns = [{"id": c.cid, "state": c.state.value, "epoch": c.epoch, "tokens": len(c.tokens),
                  "silence_s": round(c.silence, 3), "reconnects": c.stats.reconnects,
                  "resubscribes": c.stats.resubscribes, "last_reason": c.stats.last_reason}
                 for c in self.connections]
        silence = min((c["silence_s"] for c in conns), default=0.0)
        live = sum(c.state.value == "subscribed" for c in self.connections)
        return {
            "state": "ok" if self.redis_ok and live == len(conns) else "degraded",
            "version": __version__,
            "pid": str(os.getpid()),
            "started": str(int(self.started * 1000)),
            "tokens": str(sum(len(c.tokens) for c in self.connections)),
            "synced": str(len(self.mirror.synced)),
            "connections": orjson.dumps(conns).decode(),
            "last_frame_age_ms": str(int(float(silence) * 1000)),
            "published": str(self.published),
            "updated_ms": str(int(time.time() * 1000)),
            "interval_ms": str(int(self.config.health_interval * 1000)),
            "ws_url": self.config.ws_url,
        }

    async def _health_loop(self) -> None:
        key = keys.feeder(self.config.feeder_id, self.config.prefix)
        ttl_ms = int(self.config.health_ttl * 1000)
        run_id = ""
        while True:
            with contextlib.suppress(RedisError, OSError):
                pipe = self.redis.pipeline(transaction=True)
                pipe.hset(key, mapping=self.health())  # type: ignore[arg-type]
                pipe.pexpire(key, ttl_ms)
                await pipe.execute()
                # A restarted server (new run_id) lost every quiet token's book too.
                server = await self.redis.info("server")
                if run_id and server.get("run_id") != run_id and self.redis_ok:
                    log.warning("feeder.redis.restarted")
                    self.publisher.forget()
                    self._resync(self.carried(), "redis_lost")
                    self._meta_dirty |= set(self.meta)
                run_id = str(server.get("run_id", ""))
                if self._meta_dirty:
                    await self._write_meta()
            await asyncio.sleep(self.config.health_interval)

    async def _stats_loop(self) -> None:
        last, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(self.config.stats_interval)
            now = time.monotonic()
            rate = (self.published - last) / max(now - last_t, 1e-9)
            last, last_t = self.published, now
            counts = dict(self.counts)
            log.info("feeder.stats", published=self.published, per_s=round(rate, 1),
                     queue=len(self.outbox), synced=len(self.mirror.synced),
                     reconnects=sum(c.stats.reconnects for c in self.connections),
                     batch_ms=round(1000 * self.batch_seconds / max(self.batches, 1), 3),
                     **{k.replace(".", "_"): v for k, v in counts.items()})

    async def _shutdown(self) -> None:
        """Flush what is queued, delete the health key, close Redis."""
        batch = self.outbox.take_nowait()
        with contextlib.suppress(BackendError, RedisError, OSError):
            if batch.size:
                await asyncio.wait_for(self.publisher.write(batch), 5)
            await self.redis.delete(keys.feeder(self.config.feeder_id, self.config.prefix))
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
        await self.rest.close()
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        log.info("feeder.stop", published=self.published)


def _reraise_cancel() -> None:
    """redis-py can return from `execute()` normally although its task was cancelled meanwhile
    (seen with 8.1); a loop that then waits for more work would never see the cancellation."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

"""The feeder process: shards, the publisher loop, the health key, the stats line.

Redis failures never stop the feed once it runs, and they come in two kinds:
- a lost connection (refused, reset, timed out): the publisher waits for Redis to come back,
  then marks every book suspect and asks every connection for fresh snapshots (the events in
  between were never written, and a snapshot replaces them all);
- a refused write (OOM, READONLY, NOPERM: Redis answers, but no): reconnecting cannot help,
  so the feeder keeps its sockets, drops events (counted), says why in its logs (once per
  change), metrics and health hash, probes with backoff, and resyncs once writes work again.
At start-up, an error no retry can fix (bad password, unknown DB, ACL) ends the process with
a ConfigError naming REDIS_URL. Several feeders on one prefix share the tokens by partition,
one writing each, the others standing by (feeder/redundancy.py, docs/ha.md). SIGTERM is
honoured at every stage, and hands this feeder's partitions over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    ResponseError,
    TryAgainError,
)

from polybus.feeder.beacon import Beacon
from polybus.feeder.config import FeederConfig, redact
from polybus.feeder.connection import Connection, backoff_delay
from polybus.feeder.gamma import Discovery
from polybus.feeder.interest import InterestStats, next_stats, plan_interest
from polybus.feeder.leases import read_leases, tidy_leases
from polybus.feeder.metrics import MetricsServer, serve_metrics
from polybus.feeder.mirror import Mirror
from polybus.feeder.outbox import Outbox
from polybus.feeder.publisher import Publisher
from polybus.feeder.recorder import Recorder
from polybus.feeder.redundancy import Redundancy
from polybus.feeder.rest import RestBooks
from polybus.redisio import (
    REDIS_ERRORS,
    REDIS_OR_OS_ERRORS,
    Client,
    cluster,
    packing_in_c,
    upgrade,
)
from polybus.wire import keys
from polybus.wire.errors import BackendError, ConfigError, WriteRefused
from polybus.wire.events import MarketEvent, Status


__all__ = ["Feeder"]

log = structlog.get_logger("feeder.app")

STOP_BUDGET = 1.3
"""Seconds from a stop request to the end of `run()`, whatever Redis and the sockets do:
tearing the connections down, the publisher's write in flight, the last flush and the
health key's deletion share it, so the process keeps the 2 s every command promises (the
CLI cancels what is left at 1.6 s). A last flush too big for what remains is cut short: its
`disconnected` statuses are lost, not the promise."""


REDIS_OPTIONS: dict[str, Any] = dict(
    decode_responses=True, socket_connect_timeout=2, socket_timeout=10
)
"""The feeder's Redis client settings, for a single server and a cluster alike."""


_RETRIED: tuple[type[Exception], ...] = (*REDIS_OR_OS_ERRORS, BackendError)
"""What waiting for Redis retries (unless hopeless at start-up)."""


class _Stopped(Exception):
    """Raised inside the feeder when a stop was requested during a wait."""


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
        redis: Client | None = None,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        self.config = config
        self._ask_cluster = redis is None
        """Whether REDIS_URL still has to be asked if it names a cluster (a client given to
        the constructor is used as it is)."""
        self.redis: Client = redis or packing_in_c(
            aioredis.Redis.from_url(config.redis_url, **REDIS_OPTIONS)
        )
        self.redundancy = Redundancy(self)
        gate = self.redundancy.gate
        self.outbox = Outbox(config.outbox_capacity, gate=gate)
        self.mirror = Mirror()
        self.publisher = Publisher(
            self.redis,
            prefix=config.prefix,
            maxlen=config.stream_maxlen,
            writer=config.feeder_id,
            fences=gate.fence,
            partitions=config.partitions,
        )
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
        """False while Redis cannot be reached (a refusal is an answer: still True)."""
        self.redis_refused = ""
        """While Redis refuses writes: why (OOM, READONLY, NOPERM, …); empty otherwise."""
        self.refusals = 0
        """How many times writes started being refused (or the reason changed)."""
        self._reached = False
        self._deadline = 0.0
        self.started = time.time()
        self._stop = asyncio.Event()
        self._rng = random.Random()
        self._tasks: list[asyncio.Task[None]] = []
        self._fatal: asyncio.Future[None] | None = None
        self.dynamic: set[str] = set()
        """Tokens carried because a consumer leased them, not because they were configured."""
        self.discovery = Discovery(self, config) if config.top else None
        self.beacon = Beacon(self)

    def carried(self) -> list[str]:
        """Every token on some connection: configured and leased (once, though a token being
        handed over is subscribed on two)."""
        return list(dict.fromkeys(t for conn in self.connections for t in conn.tokens))

    def _new_connection(
        self, tokens: list[str], adopting: tuple[str, ...] | list[str] = (), moved: bool = False
    ) -> Connection:
        conn = Connection(
            next(self._cids),
            tokens,
            self.config,
            self.outbox,
            self.mirror,
            self._next_epoch,
            rest=self.rest,
            adopting=adopting,
            moved=moved,
            counts=self.counts,
            **self._extra,
        )
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
        if not self._stop.is_set():
            self._deadline = time.monotonic() + STOP_BUDGET
        self._stop.set()

    def _left(self, share: float = 1.0) -> float:
        """Seconds left of the stop budget (a share of them), never below a few ms."""
        deadline = self._deadline or time.monotonic() + STOP_BUDGET
        return max(0.01, (deadline - time.monotonic()) * share)

    async def run(self) -> int:
        """Run until stopped (exit code 0) or a connection gives up (exit code 1).

        Raises ConfigError for a setting that can never work (metrics port in use, Redis
        refusing the credentials or the database, another partition count recorded on this
        prefix); a stop during start-up returns 0 at once.
        """
        metrics = await self._serve_metrics()
        try:
            await self._wait_for_redis(fatal=True)
            await self._unless_stopped(self.redundancy.start())
        except _Stopped:
            await self._shutdown()
            return 0
        except BaseException:
            if metrics is not None:
                metrics.close()
            await self._close_redis()
            raise
        try:
            return await self._serve()
        finally:
            if metrics is not None:
                metrics.close()

    async def _serve_metrics(self) -> MetricsServer | None:
        if not self.config.metrics_port:
            return None
        host, port = self.config.metrics_host, self.config.metrics_port
        try:
            return await serve_metrics(self, host, port)
        except OSError as exc:
            raise ConfigError(
                f"POLYBUS_METRICS_PORT={port}: cannot listen on {host}:{port}: "
                f"{exc.strerror or exc}"
            ) from None

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        log.info(
            "feeder.start",
            feeder_id=self.config.feeder_id,
            tokens=len(self.config.tokens),
            connections=len(self.connections),
            ws_url=self.config.ws_url,
        )
        self._fatal = fatal = loop.create_future()
        for i, conn in enumerate(list(self.connections)):
            self._spawn(conn, i * self.config.connect_stagger)
        loops = [
            self._publish_loop(),
            self.beacon.run(),
            self.beacon.stats(),
            self._interest_loop(),
            self._check_loop(),
            self.redundancy.run(),
        ]
        if self.discovery is not None:
            loops.append(self.discovery.run())
        helpers = [asyncio.create_task(loop) for loop in loops]
        stopper = asyncio.create_task(self._stop.wait())
        everything = [stopper, fatal, *helpers]
        done, _ = await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        for task in done:
            error = None if task is stopper else task.exception()
            if isinstance(error, _Stopped):  # a wait inside a loop saw the stop first
                continue
            if error is not None:
                code = 1
                log.error("feeder.fatal", error=repr(error))
        # connections first (their `disconnected` statuses go to the outbox), the publisher
        # last, so that what it was writing is not cut off; _shutdown flushes the rest
        publish, others = helpers[0], [*self._tasks, *helpers[1:], stopper]
        if not self._deadline:  # ended by a connection, not by stop()
            self._deadline = time.monotonic() + STOP_BUDGET
        await self.redundancy.leave(self._left(0.15))  # no `disconnected` for what a
        # warm standby takes over
        await asyncio.gather(*(_cancel_firmly(task, self._left(0.4)) for task in others))
        await _cancel_firmly(publish, self._left(0.3))
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
                await self.redundancy.take_over_pending()
                stranded = len(self.publisher.strands.stranded)
                broken = await self.publisher.write(batch)
                self._note_strands(stranded)
            except WriteRefused as exc:
                await self._writes_refused(exc)
                continue
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
            if self.publisher.fenced:
                fenced, self.publisher.fenced = self.publisher.fenced, {}
                self.redundancy.fenced(fenced)

    def _note_strands(self, before: int) -> None:
        """Log a cluster's partial failure when it strands tokens, and their return (never
        per batch): the other primaries' tokens are written all along (feeder/strands.py)."""
        strands = self.publisher.strands
        if len(strands.stranded) > before:
            log.warning(
                "feeder.redis.stranded",
                stranded=len(strands.stranded),
                held=len(strands.held),
                dropped=strands.dropped,
            )
        if self.publisher.recovered:
            log.info(
                "feeder.redis.unstranded",
                tokens=len(self.publisher.recovered),
                stranded=len(strands.stranded),
                dropped=strands.dropped,
            )

    async def _writes_refused(self, exc: WriteRefused) -> None:
        """Redis answers but refuses writes: keep the sockets, back off, resync once it takes.

        Events are dropped meanwhile (counted in `outbox.discarded`): every book is marked
        suspect and re-snapshotted when writes work again, so nothing wrong stays `synced`.
        """
        self.redis_refused = exc.reason
        self.refusals += 1
        self.outbox.discarding = True
        since = time.monotonic()
        log.error("feeder.redis.refused", reason=exc.reason, error=str(exc))
        attempt = 0
        while True:
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, 0.2, 5.0, self._rng) + 0.05)
            try:
                await self._probe_write()
            except WriteRefused as again:
                if again.reason != self.redis_refused:  # log a change, never each attempt
                    self.redis_refused = again.reason
                    self.refusals += 1
                    log.error("feeder.redis.refused", reason=again.reason, error=str(again))
                continue
            except BackendError as lost:
                self.redis_refused = ""
                await self._recover_redis(str(lost))
                return
            break
        self.outbox.take_nowait()  # superseded by the fresh snapshots requested below
        self.outbox.discarding = False
        self._poke_if_takeovers()
        self.redis_refused = ""
        self.publisher.forget()
        self._resync(self.carried(), "redis_refused")
        self.beacon.rewrite_meta()
        log.info(
            "feeder.redis.accepted",
            refused_s=round(time.monotonic() - since, 3),
            discarded=self.outbox.discarded,
        )

    def _poke_if_takeovers(self) -> None:
        """A lease gained while Redis was away poked the outbox, and take_nowait() ate the
        poke: wake the publish loop again, or it waits for an event the closed gate of that
        partition only buffers, and never takes the partition over."""
        if self.redundancy.pending:
            self.outbox.poke()

    async def _probe_write(self) -> None:
        """One real write: the first carried token's book marked suspect (it is resynced
        next anyway), else the health hash. Raises what the publisher raises."""
        fence = self.redundancy.gate.fence
        conn, token = next(
            ((c, t) for c in self.connections for t in c.tokens if fence(t) is not None), (None, "")
        )
        if conn is None:
            await self.beacon.write()
            return
        probe = Outbox(1)
        probe.put_nowait(
            [Status(token, "suspect", "redis_refused")], conn.epoch, time.time_ns() // 1000
        )
        await self.publisher.write(probe.take_nowait())

    async def _recover_redis(self, error: str) -> None:
        """Wait for Redis, then resync every book: events since the failure were not written."""
        self.redis_ok = False
        self.outbox.discarding = True
        log.error("feeder.redis.lost", error=error)
        await self._wait_for_redis(fatal=False)
        self.outbox.take_nowait()  # superseded by the fresh snapshots requested below
        self.outbox.discarding = False
        self._poke_if_takeovers()
        self.publisher.forget()
        self._resync(self.carried(), "redis_lost")
        self.beacon.rewrite_meta()
        log.info("feeder.redis.recovered", discarded=self.outbox.discarded)

    def resync(self, tokens: list[str], reason: str) -> None:
        """Mark tokens suspect in band and ask for fresh snapshots (a takeover's cold tokens)."""
        self._resync(tokens, reason)

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

    async def _wait_for_redis(self, *, fatal: bool) -> None:
        """Until Redis answers PING and holds the Lua step; a stop request ends the wait.

        With `fatal` (start-up), an error no retry can fix raises ConfigError naming REDIS_URL;
        later the same error is retried (an operator may be fixing the server).
        """
        attempt = 0
        while True:
            try:
                if self._ask_cluster:
                    await self._unless_stopped(self._use_cluster_if_one())
                await self._unless_stopped(self.redis.ping())
                await self._unless_stopped(self.publisher.load())
                self.redis_ok = self._reached = True
                return
            except _RETRIED as exc:
                cause = exc.__cause__ if isinstance(exc, BackendError) else exc
                if fatal and cause is not None and _hopeless(cause):
                    raise ConfigError(
                        f"REDIS_URL={redact(self.config.redis_url)!r}: Redis refused: {cause}"
                    ) from None
                attempt += 1
                delay = max(0.05, backoff_delay(attempt, 0.2, 5.0, self._rng))
                if attempt == 1 or attempt % 20 == 0:
                    log.warning(
                        "feeder.redis.waiting",
                        attempt=attempt,
                        error=str(exc),
                        redis_url=redact(self.config.redis_url),
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    raise _Stopped from None

    async def _use_cluster_if_one(self) -> None:
        """Ask the server once (polybus.redisio): on a cluster node every part of the feeder
        switches to a cluster client; a single server keeps the client it has."""
        assert isinstance(self.redis, aioredis.Redis)
        client = await upgrade(self.redis, self.config.redis_url, **REDIS_OPTIONS)
        self._ask_cluster = False
        if client is not self.redis:
            self.redis = self.redundancy.leadership.redis = client
            # the publisher's own: a failed call of another loop (its slot on a dead primary)
            # must not close the connections the publisher's replies are on (redisio.cluster)
            self.publisher.redis = cluster(self.config.redis_url, **REDIS_OPTIONS)
            log.info("feeder.redis.cluster", redis_url=redact(self.config.redis_url))

    async def _unless_stopped(self, awaitable: Any) -> Any:
        """Await `awaitable`, or raise _Stopped as soon as a stop is requested."""
        work = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            raise _Stopped
        return work.result()

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
                plan = plan_interest(
                    read.leases,
                    set(cfg.tokens),
                    self.dynamic,
                    now_ms,
                    grace_ms,
                    max_tokens=cfg.max_leased_tokens,
                    max_lease_ms=max_lease_ms,
                    complete=not read.truncated,
                )
                bad: list[str | bytes] = [*plan.invalid, *read.undecodable]
                await tidy_leases(self.redis, key, oldest, bad, plan.clamp)
            except REDIS_OR_OS_ERRORS:
                continue
            if bad:  # removed now, so each is reported once
                log.warning(
                    "feeder.interest.invalid_removed",
                    count=len(bad),
                    sample=[repr(m)[:40] for m in bad[:5]],
                )
            if plan.add:
                self.dynamic.update(self.carry(plan.add))
            if plan.retire:
                self.retire(plan.retire, "lease_expired")
            self.interest = next_stats(
                self.interest,
                plan,
                leased=len(self.dynamic),
                removed=len(bad),
                truncated=read.truncated,
            )
            if plan.add or plan.retire:
                log.info("feeder.interest", added=len(plan.add), retired=len(plan.retire))
            bounded = plan.over_limit or plan.clamp or read.truncated
            if bounded and time.monotonic() >= next_report:  # periodic, not per poll
                next_report = time.monotonic() + cfg.stats_interval
                log.warning(
                    "feeder.interest.bounded",
                    ignored=plan.over_limit,
                    unread=read.truncated,
                    clamped_total=self.interest.clamped,
                    leased=len(self.dynamic),
                    max_tokens=cfg.max_leased_tokens,
                    max_lease_s=cfg.max_lease_s,
                )

    def carry(self, tokens: list[str]) -> list[str]:
        """Put tokens on connections with room, opening new connections when all are full.

        New connections open `connect_stagger` apart, like the configured ones: a burst of
        leases (or a Gamma poll) must not open many sockets at once and draw HTTP 429.
        """
        carried = set(self.carried())
        pending, parked = self.redundancy.split(
            [t for t in dict.fromkeys(tokens) if t not in carried]
        )
        added: list[str] = list(parked)  # wanted: carried once their partition is ours
        size, stagger = self.config.tokens_per_connection, self.config.connect_stagger
        for conn in self.connections:
            room = 0 if conn.retiring else size - len(conn.tokens)
            if room > 0 and pending:
                added += conn.add_tokens(pending[:room])
                pending = pending[room:]
        # run() opens configured connection i at about start + i·stagger: queue behind those,
        # then behind each other.
        configured_wait = -(-len(self.config.tokens) // size) * stagger - (
            time.time() - self.started
        )
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

    def describe(self, token: str, *, question: str = "", outcome: str = "") -> None:
        """Remember what a token is (question, outcome) for people reading its book hash."""
        self.beacon.describe(token, question=question, outcome=outcome)

    def retire(self, tokens: list[str], reason: str) -> list[str]:
        """Stop carrying tokens (their books turn retired, then expire: nothing updates them)."""
        gone: list[str] = []
        for conn in self.connections:
            gone += conn.remove_tokens(tokens, reason)
        parked = self.redundancy.parked & set(tokens)
        self.redundancy.parked -= parked
        gone += sorted(parked)
        self.dynamic.difference_update(gone)
        return gone

    def shed(self, tokens: list[str]) -> None:
        """Unsubscribe tokens of partitions other feeders carry now (no status: not ours)."""
        for conn in self.connections:
            conn.remove_tokens(tokens, "shed")

    def _on_market(self, event: MarketEvent) -> None:
        if self.discovery is not None:
            self.discovery.on_market(event)

    # --- health ---------------------------------------------------------------------------
    def health(self) -> dict[str, str]:
        """The fields of this feeder's health hash (wire/hashes.py)."""
        return self.beacon.fields()

    async def _shutdown(self) -> None:
        """Flush what is queued, release the leases, delete the health key, close Redis —
        within what is left of STOP_BUDGET, whatever Redis does."""
        batch = self.outbox.take_nowait()
        if self._reached:
            with contextlib.suppress(BackendError, *REDIS_ERRORS, OSError, TimeoutError):
                await asyncio.wait_for(self._last_words(batch), self._left(0.8))
        await self._close_redis()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.rest.close(), min(0.3, self._left()))
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        log.info("feeder.stop", published=self.published)

    async def _last_words(self, batch: Any) -> None:
        """Flush, hand every partition over, leave the members, delete the health key."""
        prefix = self.config.prefix
        if batch.size and self.redis_ok and not self.redis_refused:
            await self.publisher.write(batch)
        await self.redundancy.release()
        await self.redis.zrem(keys.members(prefix), self.config.feeder_id)
        await self.redis.delete(keys.feeder(self.config.feeder_id, prefix))

    async def _close_redis(self) -> None:
        clients = dict.fromkeys([self.redis, self.publisher.redis])  # one, or two on a cluster
        with contextlib.suppress(*REDIS_ERRORS, OSError, TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.aclose() for c in clients)), min(0.5, self._left())
            )


async def _cancel_firmly(task: asyncio.Task[Any], budget: float = 1.0) -> None:
    """Cancel `task` until it ends: redis-py can swallow a cancellation that lands inside
    a pipeline (it turns it into a connection error), and the loop would carry on."""
    deadline = time.monotonic() + budget
    while not task.done() and time.monotonic() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: an error while stopping is not worth a warning


def _hopeless(exc: BaseException) -> bool:
    """A Redis error at start-up that no retry can fix: credentials, database, ACL, URL."""
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return True
    transient = (BusyLoadingError, TryAgainError, ClusterDownError)
    return isinstance(exc, ResponseError) and not isinstance(exc, transient)


def _reraise_cancel() -> None:
    """redis-py can return from `execute()` normally although its task was cancelled meanwhile
    (seen with 8.1); a loop that then waits for more work would never see the cancellation."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

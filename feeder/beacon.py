"""What a feeder says about itself: its health hash, its stats line, and its books' labels.

The health hash (`P:feeder:<id>`, wire/hashes.py) is rewritten every POLYBUS_HEALTH_INTERVAL
with a TTL, so a killed feeder's key expires; if Redis refuses the write (out of memory) the
key is deleted instead — a reader must not take a feeder that cannot write for one that
maintains its books. The same beat notices a restarted Redis (a new `run_id`: every quiet
token's book is gone too, so all are resynced; on a cluster, a new run_id of any primary) and
puts the question/outcome of described tokens into their book hashes. One `feeder.stats` line
every POLYBUS_STATS_INTERVAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING

import structlog

from polybus.feeder.publisher import refusal
from polybus.redisio import REDIS_ERRORS, REDIS_OR_OS_ERRORS, on_cluster, run_ids
from polybus.wire import keys
from polybus.wire.errors import BackendError, WriteRefused
from polybus.wire.hashes import ConnectionHealth, FeederHealth, book_meta, encode_health
from polybus.wire.version import VERSION


if TYPE_CHECKING:
    from polybus.feeder.app import Feeder


__all__ = ["Beacon"]

log = structlog.get_logger("feeder.beacon")


class Beacon:
    """One feeder's health hash, stats line and book labels."""

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder
        self.meta: dict[str, dict[str, str]] = {}
        """token -> question/outcome fields for its book hash."""
        self._dirty: set[str] = set()
        self._refused = ""

    def fields(self) -> dict[str, str]:
        """The health hash's fields."""
        f = self.feeder
        conns = tuple(
            ConnectionHealth(
                id=c.cid,
                state=c.state.value,
                epoch=c.epoch,
                tokens=len(c.tokens),
                silence_s=round(c.silence, 3),
                reconnects=c.stats.reconnects,
                resubscribes=c.stats.resubscribes,
                last_reason=c.stats.last_reason,
            )
            for c in f.connections
        )
        silence = min((c.silence_s for c in conns), default=0.0)
        live = sum(c.state.value == "subscribed" for c in f.connections)
        writable = f.redis_ok and not f.redis_refused and not f.publisher.strands.stranded
        return encode_health(
            FeederHealth(
                state="ok" if writable and live == len(conns) else "degraded",
                redis="refused" if f.redis_refused else ("ok" if f.redis_ok else "lost"),
                redis_error=f.redis_refused,
                version=VERSION,
                pid=os.getpid(),
                started=str(int(f.started * 1000)),
                tokens=sum(len(c.tokens) for c in f.connections),
                synced=len(f.mirror.synced),
                connections=conns,
                last_frame_age_ms=int(float(silence) * 1000),
                published=f.published,
                updated_ms=int(time.time() * 1000),
                interval_ms=int(f.config.health_interval * 1000),
                ws_url=f.config.ws_url,
                **f.redundancy.health(),
            )
        )

    async def write(self) -> None:
        """Write the health hash with its TTL (raises WriteRefused / BackendError)."""
        cfg = self.feeder.config
        key = keys.feeder(cfg.feeder_id, cfg.prefix)
        try:
            # MULTI keeps the TTL with the hash; on a cluster (one key, one node, in order) a
            # plain pipeline does it without redis-py's slow cluster transactions
            pipe = self.feeder.redis.pipeline(transaction=not on_cluster(self.feeder.redis))
            pipe.hset(key, mapping=self.fields())  # type: ignore[arg-type]
            pipe.pexpire(key, int(cfg.health_ttl * 1000))
            await pipe.execute()
        except REDIS_ERRORS as exc:
            raise refusal(exc) or BackendError(f"redis: {exc}") from exc

    async def beat(self) -> None:
        """Write the health hash; if Redis refuses it, delete it (DEL is allowed when out of
        memory) and raise."""
        try:
            await self.write()
        except WriteRefused as exc:
            if exc.reason != self._refused:
                log.error("feeder.health.refused", reason=exc.reason, error=str(exc))
            self._refused = exc.reason
            cfg = self.feeder.config
            with contextlib.suppress(*REDIS_ERRORS, OSError):
                await self.feeder.redis.delete(keys.feeder(cfg.feeder_id, cfg.prefix))
            raise
        self._refused = ""

    async def run(self) -> None:
        """The health loop: beat, notice a restarted Redis, label described books."""
        f, known = self.feeder, dict[str, str]()
        while True:
            with contextlib.suppress(*REDIS_ERRORS, BackendError, OSError):
                await self.beat()
                # A restarted server (new run_id under a known name) lost every quiet token's
                # book too. A promoted replica has a new name: it kept what was replicated,
                # and the seq check catches the tokens whose last writes it never got.
                ids = await run_ids(f.redis)
                restarted = [n for n, r in ids.items() if known.get(n, r) != r]
                if restarted and f.redis_ok:
                    log.warning("feeder.redis.restarted", nodes=restarted)
                    f.publisher.forget()
                    f.resync(f.carried(), "redis_lost")
                    self.rewrite_meta()
                known = ids
                if self._dirty:
                    await self._write_meta()
            await asyncio.sleep(f.config.health_interval)

    async def stats(self) -> None:
        """One `feeder.stats` line every POLYBUS_STATS_INTERVAL (never one per message)."""
        f = self.feeder
        last, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(f.config.stats_interval)
            now = time.monotonic()
            rate = (f.published - last) / max(now - last_t, 1e-9)
            last, last_t = f.published, now
            log.info(
                "feeder.stats",
                published=f.published,
                per_s=round(rate, 1),
                queue=len(f.outbox),
                synced=len(f.mirror.synced),
                reconnects=sum(c.stats.reconnects for c in f.connections),
                batch_ms=round(1000 * f.batch_seconds / max(f.batches, 1), 3),
                **{k.replace(".", "_"): v for k, v in dict(f.counts).items()},
            )

    # --- book labels ------------------------------------------------------------------------
    def describe(self, token: str, *, question: str = "", outcome: str = "") -> None:
        """Remember what a token is (question, outcome) for people reading its book hash."""
        self.meta.setdefault(token, {}).update(book_meta(question=question, outcome=outcome))
        self._dirty.add(token)

    def rewrite_meta(self) -> None:
        """Write every label again (Redis lost them)."""
        self._dirty |= set(self.meta)

    async def _write_meta(self) -> None:
        """Put described tokens' question/outcome into their book hashes (not stream state)."""
        tokens, self._dirty = self._dirty, set()
        prefix = self.feeder.config.prefix
        pipe = self.feeder.redis.pipeline(transaction=False)
        for token in tokens:
            if self.meta.get(token):
                pipe.hset(keys.book(token, prefix), mapping=self.meta[token])  # type: ignore[arg-type]
        try:
            await pipe.execute()
        except REDIS_OR_OS_ERRORS:
            self._dirty |= tokens

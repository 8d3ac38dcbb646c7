"""A consumer's cursors, published for lag reporting (`polybus health` reads them).

`P:consumer:<name>` is a hash with a TTL, rewritten whole every few seconds:
`tokens`, `events`, `reloads`, `lag_ms`, `updated_ms`, and per token `id:<T>` (the last
stream id applied) and `seq:<T>` (its seq). `lag_ms` is the largest delivery delay — now
minus the feeder's receive time — of the entries applied since the previous report, so a
quiet market reads 0 and a consumer falling behind reads high. A consumer whose loop is stuck
stops rewriting the hash, and it expires.

Only HSET, HDEL and PEXPIRE (in MULTI/EXEC; on a cluster a plain pipeline to its node)
touch it — never DEL — so a least-privilege strategy user needs no more than those on
`P:consumer:*` (docs/operations.md). Fields of tokens no longer followed are HDELed; a clean
disconnect HDELs every field, which removes the key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from polybus.consumers.books import TokenBook
from polybus.consumers.keyed import reads
from polybus.redisio import Client, on_cluster
from polybus.redisio.nodes import Keyed
from polybus.wire import keys


__all__ = ["CursorReport"]


class CursorReport:
    """Collects delivery delays and writes the consumer's cursor hash."""

    def __init__(self, name: str, prefix: str = keys.DEFAULT_PREFIX, interval: float = 2.0) -> None:
        self.key = keys.consumer(name, prefix)
        self.interval = interval
        self.ttl_ms = int(max(10.0, 5 * interval) * 1000)
        self.lag_ms = 0.0
        self.max_lag_ms = 0.0
        """The largest delay ever observed (for tests and benchmarks)."""
        self._next = 0.0
        self._written: set[str] = set()
        """Fields the last rewrite wrote (the next drops those it does not rewrite)."""

    def observe(self, rx_us: int, now: float | None = None) -> None:
        """Note the delivery delay of one entry just applied (rx: feeder receive time, µs;
        `now`: time.time() if the caller has it)."""
        if rx_us:
            delay = (time.time() if now is None else now) * 1000 - rx_us / 1000
            if delay > self.lag_ms:  # (not max(): this runs once per entry)
                self.lag_ms = delay
                if delay > self.max_lag_ms:
                    self.max_lag_ms = delay

    def due(self) -> bool:
        """True when the hash should be rewritten."""
        return time.monotonic() >= self._next

    def fields(self, books: Mapping[str, TokenBook], events: int, reloads: int) -> dict[str, str]:
        """The hash's fields now (pure but for the clock)."""
        out = {
            "tokens": str(len(books)),
            "events": str(events),
            "reloads": str(reloads),
            "lag_ms": str(int(max(self.lag_ms, 0.0))),
            "updated_ms": str(int(time.time() * 1000)),
        }
        for token, book in books.items():
            out[f"id:{token}"] = book.cursor
            out[f"seq:{token}"] = "" if book.seq is None else str(book.seq)
        return out

    async def publish(
        self, redis: Client, books: Mapping[str, TokenBook], events: int, reloads: int
    ) -> None:
        """Rewrite the hash (tokens unsubscribed since drop out) and reset the lag window."""
        fields = self.fields(books, events, reloads)
        stale = self._written - set(fields)
        self._next = time.monotonic() + self.interval  # a refused write waits its turn too
        if on_cluster(redis):
            await self._publish_on_node(redis, stale, fields)
        else:
            pipe = redis.pipeline(transaction=True)
            if stale:
                pipe.hdel(self.key, *stale)
            pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
            pipe.pexpire(self.key, self.ttl_ms)
            await pipe.execute()
        self._written = set(fields)
        self.lag_ms = 0.0

    async def _publish_on_node(
        self, redis: Client, stale: set[str], fields: dict[str, str]
    ) -> None:
        """On a cluster: the same commands in order on the key's node, one plain pipeline
        (keyed.py). Not MULTI/EXEC: redis-py's cluster transaction, queued while the client
        wants its map again (any failed call on it), runs a nested event loop and fails. HSET
        never clears a TTL, so only a first write cut in two could leave the key without one.
        Raises the first command's error."""
        pairs = [item for name_value in fields.items() for item in name_value]
        commands: list[Keyed] = [(self.key, ("HDEL", self.key, *stale))] if stale else []
        commands += [(self.key, ("HSET", self.key, *pairs))]
        commands += [(self.key, ("PEXPIRE", self.key, self.ttl_ms))]
        for result in await reads(redis, commands):
            if isinstance(result, Exception):
                raise result

    async def remove(self, redis: Client) -> None:
        """Remove the hash (a clean disconnect): HDEL of every field written."""
        if self._written:
            await redis.hdel(self.key, *self._written)
            self._written = set()

"""The Redis publisher: one pipeline per batch, one atomic Lua step per token in it.

Each token's entries of a batch go in one EVALSHA (stream entries + hash fold, atomic), and all
of a batch's script calls, quarantine and lifecycle entries go in one non-transactional
pipeline: one round trip per batch, never per event. Keys of different tokens may live on
different Redis Cluster slots; each script call only touches one token's two keys, so on a
cluster the same pipeline is split by redis-py into one pipeline per primary, sent at once.
After a failover the new primary has no script cache (it is not replicated): its calls answer
NOSCRIPT, the script is loaded on every primary and those calls alone are sent again.

On a cluster, consumers cannot block on many tokens' streams in one XREAD (it names one slot):
after each batch the publisher appends, per partition it touched, one entry naming the written
tokens to `P:moved:{pN}` (docs/wire.md), which consumers block on instead. It is a second round
trip, sent only once the batch's steps have answered: a consumer woken by it must find the
entries there. A notice that cannot be written is kept and sent with the next batch.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from redis.exceptions import (
    ConnectionError as RedisConnectionError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from polybus.feeder.outbox import Batch
from polybus.redisio import REDIS_ERRORS, UNSETTLED, Client, on_cluster
from polybus.wire import keys, status_rules
from polybus.wire.errors import BackendError, WriteRefused
from polybus.wire.partitions import partition_of


__all__ = ["LUA", "Publisher", "refusal", "render"]


def render(script: str) -> str:
    """publish.lua with the status rules of wire/status_rules.py put in: the Lua step folds
    statuses by the very table the consumers use (an unrendered script does not compile)."""
    for marker, value in (
        ("@STATUS_RULES@", status_rules.lua_table()),
        ("@UNKNOWN_STATUS@", f"'{status_rules.UNKNOWN_READS_AS}'"),
    ):
        if marker not in script:
            raise ValueError(f"publish.lua has no {marker}")
        script = script.replace(marker, value)
    return script


PEEK = 16
"""How many of a stream's last entries a takeover's first write reads (the anchor is the newest
exchange event among them; our own statuses may sit on top)."""

LUA = render(resources.files("polybus.feeder").joinpath("publish.lua").read_text())

MOVED_MAXLEN = 1000
"""Entries kept per `P:moved:{pN}` (approximate): seconds of batches; a consumer further
behind than that sweeps every stream it follows instead (consumers/moved.py)."""

FENCED = 2
"""The Lua step's code for "the hash holds a higher fence (a successor writes this token's
partition); nothing written"."""


def refusal(exc: BaseException) -> WriteRefused | None:
    """A WriteRefused for a server that answered "no" (OOM, READONLY, NOPERM, …), else None.

    A refusal is an answer: the connection works, so reconnecting or resubscribing cannot help
    (only the operator can: memory, a failover, an ACL). A lost connection is not a refusal.
    """
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, NoScriptError, *UNSETTLED)):
        return None  # lost, or a cluster mid-failover (CLUSTERDOWN, TRYAGAIN, MOVED): not a no
    if isinstance(exc, ResponseError):
        text = str(exc)
        code = next((c for kind, c in _CODES if isinstance(exc, kind)), "")
        if not code:  # redis-py keeps the code in the text for the errors it does not map
            first = text.split(" ", 1)[0]
            code = first if first.isupper() else type(exc).__name__
        return WriteRefused(code, f"redis: {text}")
    return None


_CODES = ((OutOfMemoryError, "OOM"), (ReadOnlyError, "READONLY"), (NoPermissionError, "NOPERM"))
"""redis-py strips the error code from these: put it back, it is what an operator greps."""


class Publisher:
    """Writes batches to Redis.

    Raises WriteRefused when Redis answers a write with an error (out of memory, read-only
    replica, ACL), BackendError when the connection is lost. With `fences` (token -> the fence
    of the partition lease it is written under), the Lua step refuses a token whose book hash
    holds a higher fence — a successor has written it — writes nothing of it, and reports it in
    `fenced` (docs/ha.md). Without, writes are anonymous (replays, tests).
    """

    def __init__(
        self,
        redis: Client,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        maxlen: int = 100_000,
        quarantine_maxlen: int = 10_000,
        markets_maxlen: int = 100_000,
        writer: str = "",
        fences: Callable[[str], int | None] | None = None,
        partitions: int | None = None,
    ) -> None:
        """`partitions`: the partition count; on a cluster, written tokens are then announced
        on their partitions' `P:moved:{pN}` (without, consumers on a cluster only poll)."""
        self.redis = redis
        self.partitions = partitions
        self.unannounced: set[str] = set()
        """Tokens written whose notice could not be sent yet (sent with the next batch)."""
        self.writer = writer
        self.fences = fences
        self.fenced: dict[str, str] = {}
        """token -> the writer holding a higher fence, for tokens refused since the caller
        last cleared this."""
        self.unfenced = 0
        """Entries dropped because their token is written under no fence (not ours)."""
        self.before: dict[str, list[Any]] = {}
        """token -> its stream's last entries before this write (newest first), for the
        tokens of a batch's `peek`; raw XREVRANGE replies."""
        self.prefix = prefix
        self.maxlen = str(maxlen)
        self.quarantine_maxlen = quarantine_maxlen
        self.markets_maxlen = markets_maxlen
        self._sha: str | None = None
        self.seqs: dict[str, int] = {}
        """token -> the seq this feeder last wrote; the Lua step checks Redis still has it."""

    async def load(self) -> None:
        """Load the Lua step into the server's script cache (again after a restart)."""
        try:
            self._sha = str(await self.redis.script_load(LUA))
        except REDIS_ERRORS as exc:
            raise refusal(exc) or BackendError(f"redis: {exc}") from exc

    def _script_args(
        self, token: str, args: list[str], peek: int, fence: int | None = None
    ) -> list[Any]:
        prefix = self.prefix
        expected = self.seqs.get(token)
        if fence is None and self.fences is not None:
            fence = self.fences(token)
        return [
            2,
            keys.book(token, prefix),
            keys.stream(token, prefix),
            self.maxlen,
            token,
            "" if expected is None else str(expected),
            self.writer,
            "" if fence is None else str(fence),
            str(peek),
            *args,
        ]

    def _may_write(self, token: str, batch: Batch) -> bool:
        """With fences, a token queued under none and led under none now is not ours: its
        events are dropped (counted), never written unfenced."""
        if self.fences is None or token in batch.fences or self.fences(token) is not None:
            return True
        self.unfenced += batch.counts.get(token, 0)
        return False

    async def write(self, batch: Batch) -> list[str]:
        """Write a batch in one round trip; return tokens whose Redis state lost continuity."""
        if self._sha is None:
            await self.load()
        calls = [
            (
                token,
                self._script_args(
                    token, args, PEEK if token in batch.peek else 0, batch.fences.get(token)
                ),
            )
            for token, args in batch.entries.items()
            if self._may_write(token, batch)
        ]
        try:
            results = await self._run(calls, batch)
            missing = [
                i for i, res in enumerate(results[: len(calls)]) if isinstance(res, NoScriptError)
            ]
            if missing:  # the server lost its script cache (restart, SCRIPT FLUSH)
                await self.load()
                again = await self._run([calls[i] for i in missing], Batch())
                for i, res in zip(missing, again, strict=True):
                    results[i] = res
        except REDIS_ERRORS as exc:
            raise refusal(exc) or BackendError(f"redis: {exc}") from exc
        broken = []
        failed: BaseException | None = None
        for (token, _), res in zip(calls, results, strict=False):
            if isinstance(res, Exception):
                self.seqs.pop(token, None)  # what Redis holds for it is unknown now
                failed = failed or res
                continue
            _, seq, code, writer, before = res
            if token in batch.peek:
                self.before[token] = list(before or [])
            if int(code) == FENCED:
                self.fenced[token] = str(writer)
                self.seqs[token] = -1  # nothing written: resync if it is ever ours again
                continue
            self.seqs[token] = int(seq)
            if int(code):
                broken.append(token)
        failed = failed or next(
            (r for r in results[len(calls) :] if isinstance(r, Exception)), None
        )
        written = [t for (t, _), r in zip(calls, results, strict=False) if _wrote(r)]
        await self._announce(written)
        if failed is not None:
            raise refusal(failed) or BackendError(f"redis: {failed}") from failed
        return broken

    async def _announce(self, written: list[str]) -> None:
        """On a cluster: one `P:moved:{pN}` entry per partition touched, in one pipeline. A
        failure keeps the tokens for the next batch (consumers sweep meanwhile)."""
        if self.partitions is None or not on_cluster(self.redis):
            return
        tokens = self.unannounced.union(written)
        if not tokens:
            return
        by_partition: dict[int, list[str]] = {}
        for token in tokens:
            by_partition.setdefault(partition_of(token, self.partitions), []).append(token)
        pipe = self.redis.pipeline(transaction=False)
        for partition, names in by_partition.items():
            key = keys.moved(partition, self.prefix)
            fields = {"tokens": " ".join(names)}
            pipe.xadd(key, fields, maxlen=MOVED_MAXLEN, approximate=True)  # type: ignore[arg-type]
        try:
            results: list[Any] = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS:
            self.unannounced = tokens
            return
        self.unannounced = {
            t
            for (_, names), r in zip(by_partition.items(), results, strict=True)
            if isinstance(r, Exception)
            for t in names
        }

    def forget(self) -> None:
        """Stop checking continuity (after a deliberate full resync)."""
        self.seqs.clear()

    async def _run(self, calls: list[tuple[str, list[Any]]], batch: Batch) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        sha = self._sha or ""
        for _, args in calls:
            # the same bytes as pipe.evalsha(), which redis-py's cluster pipeline refuses
            pipe.execute_command("EVALSHA", sha, *args)
        qkey = keys.quarantine(self.prefix)
        for fields in batch.quarantine:
            pipe.xadd(qkey, fields, maxlen=self.quarantine_maxlen, approximate=True)  # type: ignore[arg-type]
        mkey = keys.markets(self.prefix)
        for fields in batch.markets:
            pipe.xadd(mkey, fields, maxlen=self.markets_maxlen, approximate=True)  # type: ignore[arg-type]
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results


def _wrote(result: Any) -> bool:
    """Whether a step's reply says it appended (not an error, not fenced off)."""
    return not isinstance(result, Exception) and int(result[2]) != FENCED

"""The Redis publisher: one pipeline per batch, one atomic Lua step per token in it.

Each token's entries of a batch go in one EVALSHA (stream entries + hash fold, atomic), and all
of a batch's script calls, quarantine and lifecycle entries go in one non-transactional
pipeline: one round trip per batch, never per event. Keys of different tokens may live on
different Redis Cluster slots; each script call only touches one token's two keys.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from polybus.feeder.outbox import Batch
from polybus.wire import keys, status_rules
from polybus.wire.errors import BackendError, WriteRefused


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


LUA = render(resources.files("polybus.feeder").joinpath("publish.lua").read_text())

REFUSED_BY_OTHER = 2
"""The Lua step's code for "another feeder holds this token's lease; nothing written"."""


def refusal(exc: BaseException) -> WriteRefused | None:
    """A WriteRefused for a server that answered "no" (OOM, READONLY, NOPERM, …), else None.

    A refusal is an answer: the connection works, so reconnecting or resubscribing cannot help
    (only the operator can: memory, a failover, an ACL). A lost connection is not a refusal.
    """
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | NoScriptError):
        return None
    if isinstance(exc, ResponseError):
        text = str(exc)
        code = next((c for kind, c in _CODES if isinstance(exc, kind)), "")
        if not code:  # redis-py keeps the code in the text for the errors it does not map
            first = text.split(" ", 1)[0]
            code = first if first.isupper() else type(exc).__name__
        return WriteRefused(code, f"redis: {text}")
    return None


_CODES = ((OutOfMemoryError, "OOM"), (ReadOnlyError, "READONLY"),
          (NoPermissionError, "NOPERM"))
"""redis-py strips the error code from these: put it back, it is what an operator greps."""


class Publisher:
    """Writes batches to Redis.

    Raises WriteRefused when Redis answers a write with an error (out of memory, read-only
    replica, ACL), BackendError when the connection is lost. With a `writer` id, each token is
    written by one feeder at a time (publish.lua): tokens another live writer holds are
    refused, nothing of them written, and reported in `contested`.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        maxlen: int = 100_000,
        quarantine_maxlen: int = 10_000,
        markets_maxlen: int = 100_000,
        writer: str = "",
        lease_ms: int = 10_000,
    ) -> None:
        self.redis = redis
        self.writer = writer
        self.lease_ms = lease_ms
        self.contested: dict[str, str] = {}
        """token -> the other writer, for tokens refused since the caller last cleared this."""
        self.prefix = prefix
        self.maxlen = str(maxlen)
        self.quarantine_maxlen = quarantine_maxlen
        self.markets_maxlen = markets_maxlen
        self._sha: str | None = None
        self._lease = str(lease_ms)
        self.seqs: dict[str, int] = {}
        """token -> the seq this feeder last wrote; the Lua step checks Redis still has it."""

    async def load(self) -> None:
        """Load the Lua step into the server's script cache (again after a restart)."""
        try:
            self._sha = str(await self.redis.script_load(LUA))
        except RedisError as exc:
            raise refusal(exc) or BackendError(f"redis: {exc}") from exc

    def _script_args(self, token: str, args: list[str]) -> list[Any]:
        prefix = self.prefix
        expected = self.seqs.get(token)
        return [2, keys.book(token, prefix), keys.stream(token, prefix), self.maxlen, token,
                "" if expected is None else str(expected), self.writer, self._lease, *args]

    async def write(self, batch: Batch, *, release: bool = False) -> list[str]:
        """Write a batch in one round trip; return tokens whose Redis state lost continuity.

        `release` (the last write before a clean exit) ends this writer's leases at once, so a
        successor with another id need not wait them out.
        """
        if self._sha is None:
            await self.load()
        self._lease = "0" if release else str(self.lease_ms)
        calls = [(token, self._script_args(token, args)) for token, args in batch.entries.items()]
        try:
            results = await self._run(calls, batch)
            missing = [i for i, res in enumerate(results[: len(calls)])
                       if isinstance(res, NoScriptError)]
            if missing:  # the server lost its script cache (restart, SCRIPT FLUSH)
                await self.load()
                again = await self._run([calls[i] for i in missing], Batch())
                for i, res in zip(missing, again, strict=True):
                    results[i] = res
        except RedisError as exc:
            raise refusal(exc) or BackendError(f"redis: {exc}") from exc
        broken = []
        failed: BaseException | None = None
        for (token, _), res in zip(calls, results, strict=False):
            if isinstance(res, Exception):
                self.seqs.pop(token, None)  # what Redis holds for it is unknown now
                failed = failed or res
                continue
            _, seq, code, writer = res
            if int(code) == REFUSED_BY_OTHER:
                self.contested[token] = str(writer)
                self.seqs[token] = -1  # nothing written: resync if it is ever ours again
                continue
            self.seqs[token] = int(seq)
            if int(code):
                broken.append(token)
        failed = failed or next((r for r in results[len(calls):] if isinstance(r, Exception)),
                                None)
        if failed is not None:
            raise refusal(failed) or BackendError(f"redis: {failed}") from failed
        return broken

    def forget(self) -> None:
        """Stop checking continuity (after a deliberate full resync)."""
        self.seqs.clear()

    async def _run(self, calls: list[tuple[str, list[Any]]], batch: Batch) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        sha = self._sha or ""
        for _, args in calls:
            pipe.evalsha(sha, *args)
        qkey = keys.quarantine(self.prefix)
        for fields in batch.quarantine:
            pipe.xadd(qkey, fields, maxlen=self.quarantine_maxlen, approximate=True)  # type: ignore[arg-type]
        mkey = keys.markets(self.prefix)
        for fields in batch.markets:
            pipe.xadd(mkey, fields, maxlen=self.markets_maxlen, approximate=True)  # type: ignore[arg-type]
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results


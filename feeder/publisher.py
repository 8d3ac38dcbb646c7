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
from redis.exceptions import NoScriptError, RedisError

from feeder.outbox import Batch
from wire import keys
from wire.errors import BackendError


__all__ = ["LUA", "Publisher"]

LUA = resources.files("feeder").joinpath("publish.lua").read_text()


class Publisher:
    """Writes batches to Redis. Raises BackendError when Redis fails."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        maxlen: int = 100_000,
        quarantine_maxlen: int = 10_000,
        markets_maxlen: int = 100_000,
    ) -> None:
        self.redis = redis
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
        except RedisError as exc:
            raise BackendError(f"redis: {exc}") from exc

    def _script_args(self, token: str, args: list[str]) -> list[Any]:
        prefix = self.prefix
        expected = self.seqs.get(token)
        return [2, keys.book(token, prefix), keys.stream(token, prefix), self.maxlen, token,
                "" if expected is None else str(expected), *args]

    async def write(self, batch: Batch) -> list[str]:
        """Write a batch in one round trip; return tokens whose Redis state lost continuity."""
        if self._sha is None:
            await self.load()
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
            raise BackendError(f"redis: {exc}") from exc
        for res in results:
            if isinstance(res, Exception):
                raise BackendError(f"redis: {res}") from res
        broken = []
        for (token, _), res in zip(calls, results, strict=False):
            _, seq, lost = res
            self.seqs[token] = int(seq)
            if int(lost):
                broken.append(token)
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


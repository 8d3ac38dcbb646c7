"""The Redis publisher: one pipeline per batch, one atomic Lua step per token in it.

Each token's entries of a batch are one atomic step (stream entries + hash fold) of the Lua
script; on one server a script call carries many tokens' steps (up to CALL_ENTRIES entries:
a call costs Redis and the client far more than a step in it). All of a batch's script calls,
quarantine and lifecycle entries go in one non-transactional pipeline: one round trip per
batch, never per event. Keys of different tokens may live on different Redis Cluster slots, so
on a cluster each call carries one token's step (its two keys share a slot) and the batch goes
as one pipeline per primary, sent at once (polybus.redisio.nodes), each
primary failing alone: during a primary's failover the others' tokens are written on, and
the failed primary's tokens are held or stranded, then resynced (feeder/strands.py). After a
failover the new primary has no script cache (it is not replicated): its calls answer
NOSCRIPT, the script is loaded on that primary and those calls alone are sent again, in one
round trip.

On a cluster, consumers cannot block on many tokens' streams in one XREAD (it names one slot):
after each batch the publisher appends, per partition it touched, one entry naming the written
tokens to `P:moved:{pN}` (docs/wire.md), which consumers block on instead. It is a second round
trip, sent only once the batch's steps have answered: a consumer woken by it must find the
entries there. A notice that cannot be written is kept and sent with the next batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
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
from polybus.feeder.strands import HOLD_LIMIT, PROBE_S, Strands
from polybus.redisio import REDIS_ERRORS, UNSETTLED, Client, on_cluster
from polybus.redisio.nodes import Keyed, per_node, refresh, unsettled
from polybus.wire import keys, status_rules
from polybus.wire.codec import PRICE_CHANGE_NAMES, Items, encode_items
from polybus.wire.errors import BackendError, WriteRefused
from polybus.wire.events import Status
from polybus.wire.partitions import partition_of


__all__ = ["LUA", "Publisher", "refusal", "render"]


def render(script: str) -> str:
    """publish.lua with the status rules of wire/status_rules.py and the price_change layout
    of wire/codec.py put in: the Lua step folds statuses by the very table the consumers use,
    and names a price change's values as the codec does (an unrendered script does not
    compile)."""
    names = PRICE_CHANGE_NAMES
    for marker, value in (
        ("@STATUS_POSITIONS@", status_rules.lua_positions(1)),
        ("@UNKNOWN_STATUS@", f"'{status_rules.UNKNOWN_READS_AS}'"),
        ("@PC_POSITIONS@", "{" + ", ".join(f"{n} = {i + 1}" for i, n in enumerate(names)) + "}"),
        ("@PC_FIELDS@", ", ".join(f"'{n}', e[{i + 1}]" for i, n in enumerate(names) if i)),
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
        self.strands = Strands()
        """On a cluster: tokens held or stranded by a primary's failure (feeder/strands.py)."""
        self.recovered: list[str] = []
        """Stranded tokens whose probe landed in the last write (resynced now)."""
        self._extra: list[Keyed] = []
        """Quarantine and lifecycle entries of the write in flight, and on a cluster those
        of earlier writes a primary's failure kept back."""
        self._stale = False
        self._refreshed = float("-inf")

    async def load(self) -> None:
        """Load the Lua step into the server's script cache (again after a restart)."""
        try:
            self._sha = str(await self.redis.script_load(LUA))
        except REDIS_ERRORS as exc:
            raise refusal(exc) or BackendError(f"redis: {exc}") from exc

    def _spec(
        self, token: str, entries: list[Items], peek: int, fence: int | None = None
    ) -> list[Any]:
        """A token's step as publish.lua reads it: [token, expected, fence, peek, entries,
        after]."""
        expected = self.seqs.get(token)
        if fence is None and self.fences is not None:
            fence = self.fences(token)
        return [
            token,
            "" if expected is None else str(expected),
            "" if fence is None else str(fence),
            peek,
            [_compact(e) for e in entries],
            status_rules.compose(_kinds(entries)),
        ]

    def _call(self, steps: list[Step]) -> list[Any]:
        """EVALSHA's arguments after the sha for one call carrying `steps`."""
        prefix = self.prefix
        names = [
            k for s in steps for k in (keys.book(s.token, prefix), keys.stream(s.token, prefix))
        ]
        return [len(names), *names, self.maxlen, self.writer, _packed([s.spec for s in steps])]

    def _script_args(
        self, token: str, entries: list[Items], peek: int, fence: int | None = None
    ) -> list[Any]:
        """EVALSHA's arguments after the sha for one token's step alone."""
        return self._call([Step(token, entries, fence, self._spec(token, entries, peek, fence))])

    def _steps(self, batch: Batch) -> list[Step]:
        """The batch's token steps, held entries first; none for a stranded token (on a cluster,
        its probe instead, at most every PROBE_S)."""
        steps = []
        for token in dict.fromkeys([*self.strands.held, *batch.entries]):
            entries, fence = self.strands.take(
                token, batch.entries.get(token, []), batch.fences.get(token)
            )
            if entries and self._may_write(token, fence, len(entries)):
                peek = token in batch.peek
                spec = self._spec(token, entries, PEEK if peek else 0, fence)
                steps.append(Step(token, entries, fence, spec, peek=peek))
        now = time.time_ns() // 1000
        for token in self.strands.probes(time.monotonic()):
            probe = [encode_items(Status(token, "suspect", "redis_lost"), epoch=0, rx=now)]
            steps.append(Step(token, probe, None, self._spec(token, probe, 0), probe=True))
        return steps

    def _may_write(self, token: str, fence: int | None, entries: int) -> bool:
        """With fences, a token queued under none and led under none now is not ours: its
        events are dropped (counted), never written unfenced."""
        if self.fences is None or fence is not None or self.fences(token) is not None:
            return True
        self.unfenced += entries
        return False

    async def write(self, batch: Batch) -> list[str]:
        """Write a batch in one round trip; return the tokens to resync: those whose Redis
        state lost continuity and, on a cluster, the stranded ones whose slots answer again
        (their probe marked them suspect)."""
        if self._sha is None:
            await self.load()
        cluster = on_cluster(self.redis)
        steps = self._steps(batch)
        try:
            if cluster:
                results = await self._run_nodes(steps, batch)
            else:
                results = await self._run_single(steps, batch)
        except REDIS_ERRORS as exc:
            raise refusal(exc) or BackendError(f"redis: {exc}") from exc
        broken, failed = self._settle(steps, results, batch, cluster)
        extra = results[len(steps) :]
        failed = failed or self._settle_extra(extra, cluster)
        written = [s.token for s, r in zip(steps, results, strict=False) if _wrote(r)]
        await self._announce(written)
        if failed is not None:
            raise refusal(failed) or BackendError(f"redis: {failed}") from failed
        return broken

    def _settle(
        self, steps: list[Step], results: list[Any], batch: Batch, cluster: bool
    ) -> tuple[list[str], BaseException | None]:
        """Note each step's outcome; return the tokens to resync and the error to raise."""
        broken: list[str] = []
        failed: BaseException | None = None
        self.recovered = []
        now = time.monotonic()
        for step, res in zip(steps, results, strict=False):
            token = step.token
            if isinstance(res, Exception):
                if not cluster or refusal(res) is not None:
                    self.seqs.pop(token, None)  # what Redis holds for it is unknown now
                    failed = failed or res
                else:
                    self._fell_out(step, res, now)
                continue
            self.strands.landed(token)
            _, seq, code, writer, before = res
            if token in batch.peek:
                self.before[token] = list(before or [])
            if int(code) == FENCED:
                self.fenced[token] = str(writer)
                self.seqs[token] = -1  # nothing written: resync if it is ever ours again
                continue
            self.seqs[token] = int(seq)
            if step.probe:
                self.recovered.append(token)
            if int(code) or step.probe:
                broken.append(token)
        return broken, failed

    def _fell_out(self, step: Step, error: BaseException, now: float) -> None:
        """A cluster step that failed short of a refusal: declined steps are held (the seq
        check stays: nothing ran), anything else strands its token (feeder/strands.py)."""
        self._stale = True
        if unsettled(error) and not step.probe and not step.peek:
            if self.strands.hold(step.token, step.entries, step.fence, now):
                return
        self.seqs.pop(step.token, None)
        self.strands.strand(step.token)

    def _settle_extra(self, results: list[Any], cluster: bool) -> BaseException | None:
        """Quarantine and lifecycle entries: on a cluster, those not written short of a
        refusal are sent again with the next batch; else the first error is raised."""
        commands, self._extra = self._extra, []
        for cmd, res in zip(commands, results, strict=False):
            if not isinstance(res, Exception):
                continue
            if not cluster or refusal(res) is not None:
                return res
            self._stale = True
            if len(self._extra) < HOLD_LIMIT:
                self._extra.append(cmd)
        return None

    async def _announce(self, written: list[str]) -> None:
        """On a cluster: one `P:moved:{pN}` entry per partition touched, in one round trip per
        primary. A failure keeps the tokens for the next batch (consumers sweep meanwhile)."""
        if self.partitions is None or not on_cluster(self.redis):
            return
        tokens = self.unannounced.union(written)
        if not tokens:
            return
        by_partition: dict[int, list[str]] = {}
        for token in tokens:
            by_partition.setdefault(partition_of(token, self.partitions), []).append(token)
        commands = [
            _xadd(keys.moved(p, self.prefix), {"tokens": " ".join(names)}, MOVED_MAXLEN)
            for p, names in by_partition.items()
        ]
        try:
            results = await per_node(self.redis, commands)
        except REDIS_ERRORS:
            self.unannounced = tokens
            return
        self.unannounced = {
            t
            for names, r in zip(by_partition.values(), results, strict=True)
            if isinstance(r, Exception)
            for t in names
        }

    def forget(self) -> None:
        """Stop checking continuity (after a deliberate full resync, which also supersedes
        what is held or stranded)."""
        self.seqs.clear()
        self.strands.clear()

    def _extras(self, batch: Batch) -> list[Keyed]:
        """The batch's quarantine and lifecycle entries, after those sent again."""
        qkey, mkey = keys.quarantine(self.prefix), keys.markets(self.prefix)
        self._extra += [_xadd(qkey, f, self.quarantine_maxlen) for f in batch.quarantine]
        self._extra += [_xadd(mkey, f, self.markets_maxlen) for f in batch.markets]
        return self._extra

    async def _run_single(self, steps: list[Step], batch: Batch) -> list[Any]:
        """One pipeline of calls of many steps each (calls()); the script loaded again if the
        server lost it (restart, SCRIPT FLUSH), and the calls that said NOSCRIPT sent again.
        Returns one result per step, then the extras'."""
        groups = calls(steps)
        results = await self._pipeline([self._call(g) for g in groups], self._extras(batch))
        missing = [i for i, r in enumerate(results[: len(groups)]) if isinstance(r, NoScriptError)]
        if missing:
            await self.load()
            again = await self._pipeline([self._call(groups[i]) for i in missing], [])
            for i, res in zip(missing, again, strict=True):
                results[i] = res
        return [*_per_step(groups, results), *results[len(groups) :]]

    async def _pipeline(self, argvs: list[list[Any]], extras: list[Keyed]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for argv in argvs:
            pipe.execute_command("EVALSHA", self._sha or "", *argv)
        for _, cmd in extras:
            pipe.execute_command(*cmd)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def _run_nodes(self, steps: list[Step], batch: Batch) -> list[Any]:
        """On a cluster: one pipeline per primary (polybus.redisio.nodes), each failing alone.
        A promoted replica has no script cache (it is not replicated): the steps it answered
        NOSCRIPT go again, after a SCRIPT LOAD on that node, in the same round trip."""
        assert on_cluster(self.redis)
        await self._refresh_if_due()
        sha = self._sha or ""
        commands: list[Keyed] = [  # one step per call: a call's keys must share a slot
            (keys.book(s.token, self.prefix), ("EVALSHA", sha, *self._call([s]))) for s in steps
        ]
        results = await per_node(self.redis, [*commands, *self._extras(batch)])
        missing = [i for i, r in enumerate(results[: len(steps)]) if isinstance(r, NoScriptError)]
        if missing:
            again = await per_node(
                self.redis, [commands[i] for i in missing], prelude=("SCRIPT", "LOAD", LUA)
            )
            for i, res in zip(missing, again, strict=True):
                results[i] = res
        groups = [[s] for s in steps]
        return [*_per_step(groups, results), *results[len(steps) :]]

    async def _refresh_if_due(self) -> None:
        """After a step failed on a cluster, and while tokens are held or stranded, ask the
        cluster for its slot map again (at most every PROBE_S): a promoted replica is found
        there. Raises when no node answers (the whole cluster is lost)."""
        assert on_cluster(self.redis)
        pending = self._stale or self.strands.held or self.strands.stranded
        now = time.monotonic()
        if not pending or now - self._refreshed < PROBE_S:
            return
        self._refreshed, self._stale = now, False
        await refresh(self.redis)


@dataclass(slots=True)
class Step:
    """One token's atomic step of a batch."""

    token: str
    entries: list[Items]
    fence: int | None
    spec: list[Any]
    """The step as publish.lua reads it (Publisher._spec)."""
    peek: bool = False
    probe: bool = False
    """A stranded token's probe (a `suspect` status): landing means its slot answers again."""


def _xadd(key: str, fields: dict[str, str], maxlen: int) -> Keyed:
    """An XADD with an approximate MAXLEN, routed by its key."""
    items = [x for pair in fields.items() for x in pair]
    return key, ("XADD", key, "MAXLEN", "~", str(maxlen), "*", *items)


CALL_ENTRIES = 2_000
"""Entries per script call at most, on one server: a call runs atomically, so other clients
(consumers' reads) wait for it whole — ~20 ms of Redis at most."""


def calls(steps: list[Step], limit: int = CALL_ENTRIES) -> list[list[Step]]:
    """The steps grouped into script calls of at most `limit` entries (a step larger than
    that alone), in order."""
    groups: list[list[Step]] = []
    size = limit
    for step in steps:
        n = len(step.entries)
        if size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(step)
        size += n
    return groups


def _per_step(groups: list[list[Step]], results: list[Any]) -> list[Any]:
    """One result per step from one per call: a call's error is each of its steps'."""
    out: list[Any] = []
    for group, res in zip(groups, results, strict=False):
        if isinstance(res, Exception) or not isinstance(res, list) or len(res) != len(group):
            error = res if isinstance(res, Exception) else ResponseError(f"bad reply: {res!r:.80}")
            out += [error] * len(group)
        else:
            out += res
    return out


def _kinds(entries: list[Items]) -> tuple[str, ...]:
    """The status rules' kinds of the entries that may change a status, in order."""
    moving = status_rules.MOVING_TYPES
    return tuple(status_rules.kind_of(e[1], _state(e)) for e in entries if e[1] in moving)


def _compact(items: Items) -> Items:
    """A price change as its values alone (publish.lua names them: half the strings for it
    to decode, and no table of fields to fill); any other entry as it is."""
    if items[1] == "price_change" and items[0::2] == PRICE_CHANGE_NAMES:
        return items[1::2]
    return items


def _state(items: Items) -> str:
    """A status entry's `state` ("" for other entries)."""
    if items[1] == "status":
        for i in range(2, len(items) - 1, 2):
            if items[i] == "state":
                return items[i + 1]
    return ""


def _packed(specs: list[list[Any]]) -> bytes:
    """The steps as publish.lua's JSON argument. A str orjson refuses (a lone surrogate:
    never from a frame orjson parsed) has it replaced rather than failing the batch."""
    try:
        return orjson.dumps(specs)
    except orjson.JSONEncodeError:
        return orjson.dumps([[*spec[:4], _clean(spec[4]), spec[5]] for spec in specs])


def _clean(entries: list[Items]) -> list[list[str]]:
    return [[i.encode("utf-8", "replace").decode("utf-8") for i in e] for e in entries]


def _wrote(result: Any) -> bool:
    """Whether a step's reply says it appended (not an error, not fenced off)."""
    return not isinstance(result, Exception) and int(result[2]) != FENCED

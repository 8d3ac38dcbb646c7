"""Gap-free sync of many tokens' books with Redis (DESIGN.md §2).

For each token: HGETALL its book hash (levels, `last_id`, `seq`) — the hash and the stream
entry that produced it were written in one atomic step, so XREAD from `last_id` then yields
every later entry exactly once. All followed streams are read in one blocking XREAD.

A token is reloaded (its hash read again) when:
- an entry's `seq` is not the next one (entries trimmed away, or Redis restarted and the
  numbering began again: a lower `seq` is a gap too);
- the audit (every token, every audit interval) finds the hash's `seq` ahead of ours while
  the entry after our cursor is gone or not the next one (trimmed while we were slow or the
  token quiet), or the hash's `seq` behind ours or gone (Redis lost its data);
- an entry cannot be used (poison.py: reported once, stepped over when seen again).
Until then the book is `suspect`: never served as good.

One bad token never costs the others: replies are read undecoded (redisio.py) and decoded
per entry; a hash or key that cannot be used (garbage, wrong type) puts only its token aside
(`bad`), retried with backoff; an XREAD refused because of one key finds that key (TYPE).

On a Redis Cluster one XREAD cannot name streams of many slots: the reader waits for the
feeders' notices of which streams moved and reads just those, one pipelined XREAD each
(moved.py); an XREAD refused for one key costs only that key. Every per-token read there
goes one pipeline per primary (keyed.py), so a primary's failover costs only its tokens:
- a read that could not reach the token's primary makes the book suspect and marks it for
  reload (`unreached`), quietly (nothing is wrong with its data; the feed stops vouching),
  retried every UNREACHED_S: its slot map is refreshed meanwhile, and it loads once the
  promoted replica serves it;
- a read the cluster declined for now (CLUSTERDOWN while a replica is elected, TRYAGAIN) did
  not run: the book stays as it is, and the read is made again later.
Only a cluster none of whose nodes answers raises (a lost Redis, as on one server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

import structlog
from redis.exceptions import NoPermissionError, ResponseError

from polybus.consumers.books import Callback, TokenBook
from polybus.consumers.cursor import CursorReport
from polybus.consumers.keyed import out_of_reach, reads
from polybus.consumers.moved import MovedWatch, read_each
from polybus.consumers.poison import Poison
from polybus.consumers.redisio import RAW, XreadPacker, classify, send_packed, text
from polybus.redisio import Client, on_cluster
from polybus.redisio.nodes import unreached
from polybus.wire import hashes, keys
from polybus.wire.codec import RawFields, decode, decode_change, pairs
from polybus.wire.errors import BackendError, DecodeError, SequenceGap


__all__ = ["Reader", "audit_reason"]

log = structlog.get_logger("consumers.reader")

Reply = list[Any]
"""XREAD's reply, undecoded: [[key, [(id, {field: value})…]]…]."""
Targets = dict[str, tuple[str, TokenBook]]

UNREACHED_S = 0.25
"""Pause before a token whose primary could not be reached is loaded again."""


def audit_reason(local: int | None, hash_seq: int | None, next_seq: int | None) -> str:
    """Why a token must be reloaded ('' when all is well).

    `local` is the seq of our last applied entry (None: no hash when loaded), `hash_seq` the
    hash's `seq` (None: no hash), `next_seq` that of the first entry after our cursor (None:
    none); it only matters when the hash is ahead of us.
    """
    if local is None:
        if hash_seq is not None and next_seq != 1:
            return "stream began before it was followed"  # XREAD from 0-0 can never fill it
        return ""
    if hash_seq is None:
        return "book hash gone (Redis lost its data?)"
    if hash_seq < local:
        return f"hash seq {hash_seq} behind ours {local} (Redis restarted?)"
    if hash_seq > local and next_seq != local + 1:
        return f"stream trimmed past cursor (next seq {next_seq}, ours {local})"
    return ""


class Reader:
    """Keeps a set of TokenBooks in step with their hashes and streams."""

    def __init__(
        self,
        books: dict[str, TokenBook],
        prefix: str,
        report: CursorReport,
        *,
        count: int = 2000,
        block_ms: int = 500,
        poison: Poison | None = None,
    ) -> None:
        self.books = books
        self.prefix = prefix
        self.report = report
        self.count, self.block_ms = count, block_ms
        self.poison = poison or Poison()
        self.reload: set[str] = set()
        """Tokens whose hash must be read again before their stream is followed."""
        self.bad: set[str] = set()
        """Tokens whose hash or key cannot be used now (retried with backoff, quietly)."""
        self.unreached: dict[str, float] = {}
        """On a cluster: tokens whose primary could not be reached -> when (monotonic) to load
        them again."""
        self.events = 0
        self.reloads = 0
        self._packer = XreadPacker()
        self.moved = MovedWatch(prefix, block_ms)
        """On a cluster: which followed streams have news (moved.py)."""

    async def close(self) -> None:
        """Stop the cluster notice readers (a single server has none)."""
        await self.moved.close()

    # --- loading --------------------------------------------------------------------------
    async def load(
        self, redis: Client, tokens: list[str], into: dict[str, TokenBook] | None = None
    ) -> list[Callback]:
        """Read these tokens' hashes (one pipeline) into their books — the followed ones, or
        those of `into` (books not yet followed, so the loop cannot race their loading)."""
        if not tokens:
            return []
        replies = await reads(
            redis, [(k, ("HGETALL", k)) for k in (keys.book(t, self.prefix) for t in tokens)]
        )
        _raise_global(redis, replies)
        books = self.books if into is None else into
        calls: list[Callback] = []
        for token, reply in zip(tokens, replies, strict=True):
            book = books.get(token)
            if book is None:
                self.reload.discard(token)
                continue
            if out_of_reach(redis, reply):  # still failing over: stays marked, tried again
                calls += self.out_of_reach(token, book, reply, loading=True)
                continue
            try:
                if isinstance(reply, Exception):
                    raise reply
                calls += book.load(reply)
            except Exception as exc:  # DecodeError, WRONGTYPE, or anything garbage provokes
                calls += self.set_bad(token, book, "book hash", exc)
                continue
            self.reload.discard(token)
            self.bad.discard(token)
            self.unreached.pop(token, None)
            self.poison.good(token)
        return calls

    async def load_pending(self, redis: Client) -> list[Callback]:
        """Reload every token marked for it whose backoff (if poisoned) has run out."""
        now = time.monotonic()
        due = (t for t in self.reload if self.poison.due(t, now))
        return await self.load(redis, sorted(t for t in due if self.unreached.get(t, 0.0) <= now))

    def gap(self, token: str, reason: str, *, quiet: bool = False) -> list[Callback]:
        """Mark a token for reload; its book is suspect meanwhile. `quiet`: the caller logs
        once for many tokens."""
        book = self.books.get(token)
        if book is None:
            return []
        self.reload.add(token)
        self.reloads += 1
        if not quiet:
            log.info("consumers.reader.reload", token=token, reason=reason)
        return book.suspect("reload", reason)

    def set_bad(self, token: str, book: TokenBook, what: str, exc: BaseException) -> list[Callback]:
        """A token's hash or key (`what`) cannot be used: suspect, retried with backoff;
        reported (an `error` callback, naming the token) only the first time."""
        self.reload.add(token)
        self.bad.add(token)
        calls = book.corrupt(f"unusable {what}")
        if self.poison.bad(token, time.monotonic()):
            log.warning("consumers.reader.unusable", token=token, what=what, error=str(exc))
            kind = DecodeError if isinstance(exc, DecodeError | ValueError) else BackendError
            error = kind(f"token {token}: {what} cannot be used: {exc}")
            error.__cause__ = exc
            calls.insert(0, ("error", {"error": error}))
        return calls

    def out_of_reach(
        self, token: str, book: TokenBook, exc: BaseException, *, loading: bool = False
    ) -> list[Callback]:
        """A read of this token met its primary failing over. Unreached (or its hash not
        loaded): suspect and marked for reload, tried again after UNREACHED_S. Declined for
        now (CLUSTERDOWN): it did not run, and the book stands."""
        if not loading and not unreached(exc):
            return []
        self.unreached[token] = time.monotonic() + UNREACHED_S
        if token in self.reload or self.books.get(token) is not book:
            self.reload.add(token)  # already marked, or not followed yet (subscribe's)
            return []
        log.info("consumers.reader.unreached", token=token, error=str(exc))
        return self.gap(token, "redis_lost", quiet=True)

    def forget(self, token: str) -> None:
        """A token is no longer followed."""
        self.reload.discard(token)
        self.bad.discard(token)
        self.unreached.pop(token, None)
        self.poison.forget(token)

    # --- following ------------------------------------------------------------------------
    async def fetch(
        self, redis: Client, block_ms: int | None = None
    ) -> tuple[Targets, Reply, list[Callback]]:
        """One XREAD over every followed stream, from the cursors held, blocking `block_ms`
        at most (default: the reader's). A refusal caused by some keys (WRONGTYPE, say) puts
        those tokens aside: their callbacks return."""
        block = max(1, min(self.block_ms, self.block_ms if block_ms is None else block_ms))
        if on_cluster(redis) and len(self.reload) < len(self.books):
            return await self._fetch_moved(redis, block)
        targets: Targets = {
            keys.stream(t, self.prefix): (t, b)
            for t, b in self.books.items()
            if t not in self.reload
        }
        if not targets:
            await asyncio.sleep(block / 1000)  # nothing to follow: don't spin
            return targets, [], []
        per_stream = max(16, self.count // len(targets))  # bound the reply, not each stream
        ids = [book.cursor for _, book in targets.values()]
        try:
            packed = self._packer.pack(per_stream, block, tuple(targets), ids)
            reply: Any = await send_packed(redis, packed)
        except ResponseError as exc:
            if isinstance(exc, NoPermissionError) or classify(exc) != "refused":
                raise
            calls = await self._culprits(redis, targets)
            if not calls:
                raise
            return {}, [], calls
        if isinstance(reply, dict):  # RESP3, as sent: {key: entries}
            return targets, list(reply.items()), []
        return targets, list(reply or []), []

    async def _fetch_moved(
        self, redis: Client, block: int
    ) -> tuple[Targets, Reply, list[Callback]]:
        """On a cluster: wait for notices, then one XREAD per moved stream (all on a sweep).
        Work per fetch follows the news, not the number of tokens followed."""
        news = await self.moved.wait(redis, self.books, block)
        tokens = self.books if news is None else news
        chosen: Targets = {
            keys.stream(t, self.prefix): (t, self.books[t])
            for t in tokens
            if t in self.books and t not in self.reload
        }
        per_stream = max(16, self.count // max(1, len(chosen)))
        cursors = {key: book.cursor for key, (_, book) in chosen.items()}
        reply, errors = await read_each(redis, cursors, per_stream)
        _raise_global(redis, list(errors.values()))
        calls: list[Callback] = []
        for key, exc in errors.items():
            token, book = chosen[key]
            if not out_of_reach(redis, exc):
                calls += self.set_bad(token, book, "stream", exc)
            elif unreached(exc):
                calls += self.out_of_reach(token, book, exc)
            else:  # declined for now (CLUSTERDOWN): read it again at the next fetch
                self.moved.later([token])
        # a stream that filled its share may hold more: read it again without waiting
        self.moved.poke(chosen[text(key)][0] for key, items in reply if len(items) >= per_stream)
        return chosen, reply, calls

    async def _culprits(self, redis: Client, targets: Targets) -> list[Callback]:
        """XREAD was refused: find the streams that are not streams and put them aside."""
        pipe = redis.pipeline(transaction=False)
        for key in targets:
            pipe.execute_command("TYPE", key, **RAW)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        _raise_global(redis, replies)
        calls: list[Callback] = []
        for (key, (token, book)), kind in zip(targets.items(), replies, strict=True):
            if isinstance(kind, Exception) or kind not in (b"stream", b"none", "stream", "none"):
                calls += self.set_bad(token, book, "stream", BackendError(f"{key} is {kind!r}"))
        return calls

    def entries(self, targets: Targets, reply: Reply) -> Iterator[list[Callback]]:
        """Apply the reply's entries one at a time, yielding each one's callbacks.

        Lazily, so a callback sees the book as of its own event; a token unsubscribed or
        marked for reload meanwhile is skipped (the reload re-reads from its hash).
        """
        books, reload, poisoned, report = self.books, self.reload, self.poison.tokens, self.report
        for key, items in reply:
            target = targets.get(text(key))
            if target is None:
                continue
            token, book = target
            for entry_id, fields in items:  # fields: a dict, or as sent (a flat list)
                if books.get(token) is not book or token in reload:
                    break
                try:  # a stream id is ASCII: text()'s checks only for what is not bytes
                    eid = entry_id.decode()
                except (AttributeError, UnicodeDecodeError):
                    eid = text(entry_id)
                # the hot path, inline: a price_change of a token with nothing poisoned
                change = None if token in poisoned else decode_change(fields)
                if change is None:
                    yield self._apply(token, book, eid, fields or {})
                    continue
                now = time.time()
                try:
                    calls = book.apply_change(change, eid, now)
                except SequenceGap as exc:
                    yield self.gap(token, str(exc))
                    continue
                except Exception as exc:  # anything garbage provokes: this entry's
                    yield self._poisoned(token, eid, exc)
                    continue
                self.events += 1
                report.observe(change[2], now)
                yield calls

    def _apply(
        self, token: str, book: TokenBook, entry_id: str, fields: RawFields
    ) -> list[Callback]:
        if self.poison.known(token, entry_id):
            book.cursor = entry_id  # seen and reported before: step over it, quietly
            return []
        try:
            entry = decode(pairs(fields) if isinstance(fields, list) else fields, token, entry_id)
            calls = book.apply(entry)
        except SequenceGap as exc:
            return self.gap(token, str(exc))
        except Exception as exc:  # DecodeError, or anything garbage provokes: this entry's
            return self._poisoned(token, entry_id, exc)
        self.events += 1
        self.report.observe(entry.rx)
        return calls

    def _poisoned(self, token: str, entry_id: str, exc: Exception) -> list[Callback]:
        self.poison.entry(token, entry_id, time.monotonic())
        error = DecodeError(f"token {token}: stream entry {entry_id} cannot be used: {exc}")
        error.__cause__ = exc
        log.warning("consumers.reader.poisoned", token=token, id=entry_id, error=str(exc))
        return [("error", {"error": error}), *self.gap(token, f"poisoned {entry_id}", quiet=True)]

    # --- auditing -------------------------------------------------------------------------
    async def audit(self, redis: Client, among: Iterable[str] | None = None) -> list[Callback]:
        """Check every followed token (or those `among` them) for gaps XREAD cannot show: one
        HGET each, then one XRANGE for those whose hash is ahead of us (is the next entry
        still there?)."""
        books = self.books
        tokens = [t for t in (books if among is None else among) if t in books]
        tokens = [t for t in tokens if t not in self.reload]
        if not tokens:
            return []
        seq = hashes.BookField.SEQ
        replies = await reads(
            redis, [(k, ("HGET", k, seq)) for k in (keys.book(t, self.prefix) for t in tokens)]
        )
        _raise_global(redis, replies)
        calls: list[Callback] = []
        ahead: list[tuple[str, TokenBook, int | None]] = []
        for token, reply in zip(tokens, replies, strict=True):
            book = self.books[token]
            if out_of_reach(redis, reply):
                calls += self.out_of_reach(token, book, reply)
                continue
            try:
                hash_seq = _seq(reply)
            except (DecodeError, BackendError) as exc:
                calls += self.set_bad(token, book, "book hash", exc)
                continue
            if hash_seq is not None and (book.seq is None or hash_seq > book.seq):
                ahead.append((token, book, hash_seq))
            elif reason := audit_reason(book.seq, hash_seq, None):
                calls += self.gap(token, reason)
        if on_cluster(redis):  # entries we have not read: a notice may have been lost
            self.moved.poke(token for token, _, _ in ahead)
        return calls + await self._audit_next(redis, ahead)

    async def _audit_next(
        self, redis: Client, ahead: list[tuple[str, TokenBook, int | None]]
    ) -> list[Callback]:
        if not ahead:
            return []
        commands = []
        for token, book, _ in ahead:
            key = keys.stream(token, self.prefix)
            commands.append((key, ("XRANGE", key, f"({book.cursor}", "+", "COUNT", 1)))
        replies = await reads(redis, commands)
        _raise_global(redis, replies)
        calls: list[Callback] = []
        for (token, book, hash_seq), reply in zip(ahead, replies, strict=True):
            if out_of_reach(redis, reply):
                calls += self.out_of_reach(token, book, reply)
                continue
            if isinstance(reply, Exception):
                calls += self.set_bad(token, book, "stream", reply)
                continue
            try:
                next_seq = _seq(reply[0][1].get(b"seq")) if reply else None
            except (DecodeError, BackendError, AttributeError, IndexError, TypeError):
                continue  # a poisoned next entry: XREAD will meet it and deal with it
            if reason := audit_reason(book.seq, hash_seq, next_seq):
                calls += self.gap(token, reason)
        return calls


def _seq(reply: Any) -> int | None:
    """A `seq` value from an undecoded reply (None when absent)."""
    if isinstance(reply, Exception):
        raise BackendError(str(reply)) from reply
    return hashes.decode_seq(reply)


def _raise_global(redis: Client, replies: list[Any]) -> None:
    """A pipeline's error that is not about one key (lost connection, NOPERM) is everyone's;
    on a cluster a key whose primary is failing over costs only that key (keyed.py)."""
    for reply in replies:
        if (
            isinstance(reply, Exception)
            and not out_of_reach(redis, reply)
            and (isinstance(reply, NoPermissionError) or classify(reply) != "refused")
        ):
            raise reply

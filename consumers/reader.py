"""Gap-free sync of many tokens' books with Redis (DESIGN.md §2).

For each token: HGETALL its book hash (levels, `last_id`, `seq`) — the hash and the stream
entry that produced it were written in one atomic step, so XREAD from `last_id` then yields
every later entry exactly once. All followed streams are read in one blocking XREAD.

A token is reloaded (its hash read again) when:
- an entry's `seq` is not the next one (entries trimmed away, or Redis restarted and the
  numbering began again: a lower `seq` is a gap too);
- the audit of a quiet stream finds its first entry beyond the cursor (trimmed while we were
  slow) or the hash's `seq` behind ours or gone (Redis lost its data);
- an entry cannot be decoded (reported to `on_error`; the hash's `last_id` is past it).
Until then the book is `suspect`: never served as good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
import structlog

from consumers.books import Callback, TokenBook
from consumers.cursor import CursorReport
from wire import keys
from wire.codec import decode
from wire.errors import DecodeError, SequenceGap


__all__ = ["Reader", "audit_reason"]

log = structlog.get_logger("consumers.reader")

Reply = list[tuple[str, list[tuple[str, dict[str, str]]]]]
Targets = dict[str, tuple[str, TokenBook]]


def audit_reason(local: int | None, hash_seq: str | None, first_seq: str | None) -> str:
    """Why a quiet token must be reloaded ('' when all is well).

    `local` is the seq of our last applied entry (None: no hash when loaded), `hash_seq` the
    hash's `seq` (None: no hash), `first_seq` that of the stream's first entry (None: empty).
    """
    if local is None:
        if hash_seq and (first_seq is None or int(first_seq) > 1):
            return "stream began before it was followed"  # XREAD from 0-0 can never fill it
        return ""
    if hash_seq is None:
        return "book hash gone (Redis lost its data?)"
    if int(hash_seq) < local:
        return f"hash seq {hash_seq} behind ours {local} (Redis restarted?)"
    if int(hash_seq) > local and (first_seq is None or int(first_seq) > local + 1):
        return f"stream trimmed past cursor (first seq {first_seq}, ours {local})"
    return ""


class Reader:
    """Keeps a set of TokenBooks in step with their hashes and streams."""

    def __init__(self, books: dict[str, TokenBook], prefix: str, report: CursorReport, *,
                 count: int = 2000, block_ms: int = 500) -> None:
        self.books = books
        self.prefix = prefix
        self.report = report
        self.count, self.block_ms = count, block_ms
        self.reload: set[str] = set()
        """Tokens whose hash must be read again before their stream is followed."""
        self.events = 0
        self.reloads = 0
        self._active: set[str] = set()

    # --- loading --------------------------------------------------------------------------
    async def load(self, redis: aioredis.Redis, tokens: list[str],
                   into: dict[str, TokenBook] | None = None) -> list[Callback]:
        """Read these tokens' hashes (one pipeline) into their books — the followed ones, or
        those of `into` (books not yet followed, so the loop cannot race their loading)."""
        if not tokens:
            return []
        pipe = redis.pipeline(transaction=False)
        for token in tokens:
            pipe.hgetall(keys.book(token, self.prefix))
        replies: list[Any] = await pipe.execute()
        books = self.books if into is None else into
        calls: list[Callback] = []
        for token, fields in zip(tokens, replies, strict=True):
            if into is None:
                self.reload.discard(token)
            book = books.get(token)
            if book is not None:
                calls += book.load(fields)
        return calls

    async def load_pending(self, redis: aioredis.Redis) -> list[Callback]:
        """Reload every token marked for it."""
        return await self.load(redis, sorted(self.reload))

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

    # --- following ------------------------------------------------------------------------
    async def fetch(self, redis: aioredis.Redis) -> tuple[Targets, Reply]:
        """One blocking XREAD over every followed stream, from the cursors held."""
        targets: Targets = {keys.stream(t, self.prefix): (t, b) for t, b in self.books.items()
                            if t not in self.reload}
        if not targets:
            await asyncio.sleep(self.block_ms / 1000)  # nothing to follow: don't spin
            return targets, []
        per_stream = max(16, self.count // len(targets))  # bound the reply, not each stream
        streams = {key: book.cursor for key, (_, book) in targets.items()}
        reply: Any = await redis.xread(streams, count=per_stream,  # type: ignore[arg-type]
                                       block=self.block_ms)
        return targets, list(reply or [])

    def entries(self, targets: Targets, reply: Reply) -> Iterator[list[Callback]]:
        """Apply the reply's entries one at a time, yielding each one's callbacks.

        Lazily, so a callback sees the book as of its own event; a token unsubscribed or
        marked for reload meanwhile is skipped (the reload re-reads from its hash).
        """
        for key, items in reply:
            token, book = targets[key]
            self._active.add(token)
            for entry_id, fields in items:
                if self.books.get(token) is not book or token in self.reload:
                    break
                yield self._apply(token, book, entry_id, fields)

    def _apply(self, token: str, book: TokenBook, entry_id: str,
               fields: dict[str, str]) -> list[Callback]:
        try:
            entry = decode(fields, token, entry_id)
        except DecodeError as exc:
            return [("error", {"error": exc}), *self.gap(token, f"undecodable {entry_id}")]
        try:
            calls = book.apply(entry)
        except SequenceGap as exc:
            return self.gap(token, str(exc))
        self.events += 1
        self.report.observe(entry.rx)
        return calls

    # --- auditing -------------------------------------------------------------------------
    async def audit(self, redis: aioredis.Redis) -> list[Callback]:
        """Check the streams that delivered nothing lately for gaps XREAD cannot show."""
        quiet = [t for t in self.books if t not in self._active and t not in self.reload]
        self._active.clear()
        if not quiet:
            return []
        pipe = redis.pipeline(transaction=False)
        for token in quiet:
            pipe.hget(keys.book(token, self.prefix), "seq")
            pipe.xrange(keys.stream(token, self.prefix), "-", "+", count=1)
        replies: list[Any] = await pipe.execute()
        calls: list[Callback] = []
        for i, token in enumerate(quiet):
            book = self.books.get(token)
            if book is None or token in self.reload:
                continue
            first = replies[2 * i + 1]
            first_seq = first[0][1].get("seq") if first else None
            reason = audit_reason(book.seq, replies[2 * i], first_seq)
            if reason:
                calls += self.gap(token, reason)
        return calls

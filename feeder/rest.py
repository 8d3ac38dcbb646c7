"""REST snapshots (`POST /books` at CLOB_URL): the resync ladder's rung that does not depend on
the socket that just failed (PROTOCOL.md §4, §9).

`parse_books` is pure: the answer is an array of book objects without `event_type`, which the
normalizer already reads (it treats an object with a token and both sides as a book), so the
same validation applies to REST as to the socket; the books are re-labelled `source=rest`.
`RestBooks` is the asyncio shell: one aiohttp session, at most `BATCH` ids per request, at most
`PER_WINDOW` requests per `WINDOW` seconds (the documented limit), and a timeout per request.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable
from dataclasses import replace

import aiohttp
import structlog

from polybus.feeder.normalize import Normalizer
from polybus.wire.errors import UpstreamError
from polybus.wire.events import Book


__all__ = ["BATCH", "RestBooks", "parse_books"]

log = structlog.get_logger("feeder.rest")

BATCH = 500
"""Ids per `POST /books` (the documented maximum; really a byte limit near 500 ids)."""
PER_WINDOW, WINDOW = 500, 10.0
"""`/books`: 500 requests per 10 s, sliding (excess is throttled by the exchange)."""


def parse_books(
    body: bytes | str, tokens: Iterable[str], rx: int
) -> tuple[list[Book], list[tuple[str, str]]]:
    """The books of `tokens` in a `/books` answer, and what had to be quarantined."""
    out = Normalizer(tokens).feed(body, rx)
    books = [replace(e, source="rest") for e in out.events if isinstance(e, Book)]
    return books, out.quarantine


class RestBooks:
    """Fetches book snapshots over REST within the exchange's rate limit."""

    def __init__(self, clob_url: str, *, timeout: float = 10.0) -> None:
        self.url = clob_url.rstrip("/") + "/books"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.requests = 0
        self.failures = 0
        self._sent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, tokens: list[str]) -> list[bytes]:
        """The raw answers for `tokens`, one per batch; raises UpstreamError on failure."""
        bodies = []
        for at in range(0, len(tokens), BATCH):
            bodies.append(await self._post(tokens[at : at + BATCH]))
        return bodies

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, tokens: list[str]) -> bytes:
        await self._throttle()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, headers={"User-Agent": "polybus"}
            )
        self.requests += 1
        try:
            async with self._session.post(self.url, json=[{"token_id": t} for t in tokens]) as r:
                body = await r.read()
                if r.status != 200:
                    raise UpstreamError(f"POST /books: HTTP {r.status}")
                return body
        except (aiohttp.ClientError, TimeoutError, UpstreamError) as exc:
            self.failures += 1
            raise UpstreamError(f"POST /books: {exc!r}") from exc

    async def _throttle(self) -> None:
        """Wait until a request fits in the sliding window."""
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._sent and now - self._sent[0] > WINDOW:
                    self._sent.popleft()
                if len(self._sent) < PER_WINDOW:
                    self._sent.append(now)
                    return
                await asyncio.sleep(WINDOW - (now - self._sent[0]) + 0.01)

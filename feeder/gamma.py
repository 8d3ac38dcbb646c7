"""`polybus feed --top N`: carry the N most active markets and keep reconciling.

A Gamma poll at start and every `gamma_interval` seconds fills vacancies with the most active
markets not yet carried, and retires carried markets that Gamma no longer lists as tradable.
Between polls, the market channel's `new_market` adds a market when there is room and
`market_resolved` retires one. Lifecycle entries reach `P:markets` through the outbox, once.

Gamma is read through one aiohttp session with timeouts. Whatever it answers — a truncated
body, a broken status line, a reset, a stall, non-JSON, the wrong JSON, 5xx, 429 — the poll
fails with a `GammaError` or `DecodeError`, is logged, and is retried with capped exponential
backoff (honouring Retry-After); the markets already carried stay carried. An answer that
decodes to nothing usable never retires anything.
"""

from __future__ import annotations

import asyncio
import random
import urllib.parse
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

from polybus.feeder.config import FeederConfig
from polybus.feeder.discovery import (
    GammaMarket,
    parse_markets,
    parse_retry_after,
    retry_delay,
    select_top,
)
from polybus.wire.errors import DecodeError, InvalidToken, UpstreamError
from polybus.wire.events import MarketEvent
from polybus.wire.keys import validate_token


if TYPE_CHECKING:
    from polybus.feeder.app import Feeder

__all__ = ["Discovery", "GammaError", "fetch_markets"]

log = structlog.get_logger("feeder.gamma")

PAGE = 500
MAX_PAGES = 20
MAX_BODY = 64 * 2**20
"""A page of 500 markets is about 1 MB; more than this is not a Gamma answer."""
TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5, sock_read=10)
RETRY_BASE = 1.0
"""Seconds before the first retry of a failed poll (doubling, up to the poll interval)."""


class GammaError(UpstreamError):
    """A Gamma request failed in transport or HTTP; `retry_after` is the server's wish."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    """One GET, decoded; every way it can fail becomes GammaError or DecodeError."""
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise GammaError(
                    f"HTTP {response.status}",
                    parse_retry_after(response.headers.get("Retry-After")),
                )
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_BODY:
                    raise GammaError(f"answer larger than {MAX_BODY} bytes")
    except (aiohttp.ClientError, HttpProcessingError, TimeoutError, OSError) as exc:
        raise GammaError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {bytes(body[:60])!r}") from exc


async def fetch_markets(
    session: aiohttp.ClientSession, gamma_url: str
) -> tuple[list[GammaMarket], bool]:
    """Every open market from Gamma `/markets`, and whether the listing is complete."""
    markets: list[GammaMarket] = []
    for page in range(MAX_PAGES):
        query = urllib.parse.urlencode({"closed": "false", "limit": PAGE, "offset": page * PAGE})
        payload = await _get_json(session, f"{gamma_url.rstrip('/')}/markets?{query}")
        found, problems = parse_markets(payload)
        if problems:
            log.warning("feeder.gamma.skipped", count=len(problems), sample=problems[:3])
        if problems and not found:
            raise DecodeError(f"no market on page {page} could be read")
        markets += found
        if len(payload) < PAGE:
            # An empty listing is an outage, not "every market closed": retire nothing.
            return markets, bool(markets)
    return markets, False


class Discovery:
    """Which markets the feeder carries because they are among the most active."""

    def __init__(self, feeder: Feeder, config: FeederConfig) -> None:
        self.feeder = feeder
        self.config = config
        self.carried: dict[str, tuple[str, ...]] = {}
        """condition id -> its tokens, for markets this discovery added."""
        self.polls = 0
        self.failures = 0
        """Failed polls, in total."""
        self.timeout = TIMEOUT
        self._rng = random.Random()

    async def run(self) -> None:
        """Poll Gamma now and every `gamma_interval`; a failed poll is retried with backoff."""
        headers = {"User-Agent": "polybus"}
        async with aiohttp.ClientSession(timeout=self.timeout, headers=headers) as session:
            streak = 0
            while True:
                delay = self.config.gamma_interval
                try:
                    markets, complete = await fetch_markets(session, self.config.gamma_url)
                except (UpstreamError, DecodeError) as exc:
                    streak += 1
                    self.failures += 1
                    delay = retry_delay(
                        streak,
                        min(RETRY_BASE, delay),
                        delay,
                        self._rng,
                        getattr(exc, "retry_after", None),
                    )
                    log.warning(
                        "feeder.gamma.poll_failed",
                        error=str(exc),
                        attempt=streak,
                        retry_in=round(delay, 3),
                        url=self.config.gamma_url,
                    )
                else:
                    streak = 0
                    self.reconcile(markets, complete)
                    self.polls += 1
                await asyncio.sleep(delay)

    def reconcile(self, markets: list[GammaMarket], complete: bool) -> None:
        """Retire markets no longer tradable; fill vacancies with the most active."""
        tradable = {m.condition_id for m in markets if m.active}
        if complete:
            for cid in [c for c in self.carried if c not in tradable]:
                self._retire(cid, "market_closed")
        for market in select_top(markets, self.config.top, self.config.min_volume):
            if len(self.carried) >= self.config.top:
                break
            if market.condition_id not in self.carried:
                self._add(market.condition_id, market.tokens, market.question, market.outcomes)

    def on_market(self, event: MarketEvent) -> None:
        """Lifecycle from the market channel: add a new market if there is room, retire resolved."""
        if event.kind == "market_resolved":
            if event.market in self.carried:
                self._retire(event.market, "market_resolved")
            return
        if len(self.carried) < self.config.top and event.market not in self.carried:
            try:
                tokens = tuple(validate_token(t) for t in event.asset_ids)
            except InvalidToken:
                return
            if tokens:
                self._add(event.market, tokens, event.question, event.outcomes)

    def _add(
        self, cid: str, tokens: tuple[str, ...], question: str, outcomes: tuple[str, ...]
    ) -> None:
        self.carried[cid] = tokens
        for i, token in enumerate(tokens):
            outcome = outcomes[i] if i < len(outcomes) else ""
            self.feeder.describe(token, question=question, outcome=outcome)
        added = self.feeder.carry(list(tokens))
        log.info("feeder.gamma.added", market=cid, tokens=len(added))

    def _retire(self, cid: str, reason: str) -> None:
        tokens = self.carried.pop(cid)
        gone = self.feeder.retire(list(tokens), reason)
        log.info("feeder.gamma.retired", market=cid, tokens=len(gone), reason=reason)

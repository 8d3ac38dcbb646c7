"""`polybus feed --top N`: carry the N most active markets and keep reconciling.

A Gamma poll at start and every `gamma_interval` seconds fills vacancies with the most active
markets not yet carried, and retires carried markets that Gamma no longer lists as tradable.
Between polls, the market channel's `new_market` adds a market when there is room and
`market_resolved` retires one. Lifecycle entries reach `P:markets` through the outbox, once.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from feeder.config import FeederConfig
from feeder.discovery import GammaMarket, parse_markets, select_top
from wire.errors import DecodeError, InvalidToken
from wire.events import MarketEvent
from wire.keys import validate_token


if TYPE_CHECKING:
    from feeder.app import Feeder

__all__ = ["Discovery", "fetch_markets"]

log = structlog.get_logger("feeder.gamma")

PAGE = 500
MAX_PAGES = 20


def _get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "polybus"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return orjson.loads(response.read())


async def fetch_markets(gamma_url: str) -> tuple[list[GammaMarket], bool]:
    """Every open market from Gamma `/markets`, and whether the listing is complete."""
    markets: list[GammaMarket] = []
    for page in range(MAX_PAGES):
        query = urllib.parse.urlencode({"closed": "false", "limit": PAGE, "offset": page * PAGE})
        payload = await asyncio.to_thread(_get_json, f"{gamma_url.rstrip('/')}/markets?{query}")
        found, problems = parse_markets(payload)
        if problems:
            log.warning("feeder.gamma.skipped", count=len(problems), sample=problems[:3])
        markets += found
        if len(payload) < PAGE:
            return markets, True
    return markets, False


class Discovery:
    """Which markets the feeder carries because they are among the most active."""

    def __init__(self, feeder: Feeder, config: FeederConfig) -> None:
        self.feeder = feeder
        self.config = config
        self.carried: dict[str, tuple[str, ...]] = {}
        """condition id -> its tokens, for markets this discovery added."""
        self.polls = 0

    async def run(self) -> None:
        """Poll Gamma now and every `gamma_interval`; a failed poll is retried next time."""
        while True:
            try:
                markets, complete = await fetch_markets(self.config.gamma_url)
            except (OSError, DecodeError, ValueError) as exc:
                log.warning("feeder.gamma.poll_failed", error=str(exc), url=self.config.gamma_url)
            else:
                self.reconcile(markets, complete)
                self.polls += 1
            await asyncio.sleep(self.config.gamma_interval)

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

    def _add(self, cid: str, tokens: tuple[str, ...], question: str,
             outcomes: tuple[str, ...]) -> None:
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

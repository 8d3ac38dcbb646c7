"""One binary market: identity, the YES book, and the mirrored NO view of it. Pure.

Only the YES book is stored. The NO book is its mirror, exactly as the exchange's two legs
move together: a NO bid at 1 − p for each YES ask at p (same size), a NO ask at 1 − p for
each YES bid at p.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from polybus.simulator.units import COARSE, ONE


__all__ = ["Market", "Top"]

Top = tuple[int | None, int | None]
"""(best bid, best ask) in pips; None for an empty side."""


@dataclass(eq=False)
class Market:
    """A binary market; `bids`/`asks` map YES price (pips) → aggregate size (cents)."""

    index: int
    id: str
    condition_id: str
    question: str
    slug: str
    yes: str
    no: str
    volume24hr: float
    version: str = "v1"
    tick: int = COARSE
    fixed_tick: bool = False
    """A 0.005/0.0025 market: its tick never changes (the 0.96/0.04 retick rule is off)."""
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    last_trade: int | None = None
    """Price of the last trade, in YES pips (the NO price is its complement)."""
    last_side: str = ""
    """Taker side of the last trade as seen on YES."""
    volume: float = 0.0
    active: bool = True
    winner: str = ""

    @property
    def tokens(self) -> tuple[str, str]:
        return (self.yes, self.no)

    def top(self) -> Top:
        """YES (best bid, best ask)."""
        return (max(self.bids) if self.bids else None, min(self.asks) if self.asks else None)

    def top_of(self, token: str) -> Top:
        """(best bid, best ask) of either token."""
        bid, ask = self.top()
        if token == self.yes:
            return bid, ask
        return (None if ask is None else ONE - ask, None if bid is None else ONE - bid)

    def levels(self, token: str) -> tuple[dict[int, int], dict[int, int]]:
        """(bids, asks) of `token` as price → size: the YES book, or its mirror for NO."""
        if token == self.yes:
            return self.bids, self.asks
        return (
            {ONE - p: s for p, s in self.asks.items()},
            {ONE - p: s for p, s in self.bids.items()},
        )

    def last_trade_of(self, token: str) -> int | None:
        """Last trade price of `token` in pips, None before the first trade."""
        if self.last_trade is None:
            return None
        return self.last_trade if token == self.yes else ONE - self.last_trade

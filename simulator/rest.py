"""The CLOB REST twin (§4): books, prices, midpoints, tick sizes — read from the engine.

Same ordering as live (bids ascending, asks descending), numbers as strings except where
live sends a number (`minimum_tick_size`), and live's error bodies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polybus.simulator.market import Market
from polybus.simulator.units import ONE, fmt_price


if TYPE_CHECKING:
    from polybus.simulator.server import Simulator

__all__ = ["ROUTES", "Reply", "fmt_mid"]

Reply = tuple[int, Any]
NO_BOOK = {"error": "No orderbook exists for the requested token id"}
MAX_BOOKS = 500


def fmt_mid(bid: int, ask: int) -> str:
    """(bid + ask) / 2 exactly, as a canonical decimal (a half pip needs a fifth decimal)."""
    total = (bid + ask) * 5  # in 1/100000
    whole, frac = divmod(total, ONE * 10)
    return str(whole) if not frac else f"{whole}.{frac:05d}".rstrip("0")


def _market(sim: Simulator, token: str) -> Market | None:
    market = sim.engine.market(token)
    return market if market is not None and market.active else None


def rest_book(sim: Simulator, token: str) -> dict[str, Any] | None:
    """The `GET /book` object of an active token, None for unknown or resolved ones."""
    market = _market(sim, token)
    if market is None:
        return None
    msg = sim.engine.book_msg(token, initial=False)
    last = market.last_trade_of(token)
    return {
        "market": msg["market"],
        "asset_id": token,
        "timestamp": msg["timestamp"],
        "hash": msg["hash"],
        "bids": msg["bids"],
        "asks": msg["asks"],
        "min_order_size": "5",
        "tick_size": fmt_price(market.tick),
        "neg_risk": False,
        "last_trade_price": "" if last is None else fmt_price(last),
    }


async def _book(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    book = rest_book(sim, q.get("token_id", ""))
    return (200, book) if book is not None else (404, NO_BOOK)


async def _books(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
        return 400, {"error": "Invalid payload"}
    if len(body) > MAX_BOOKS:
        return 400, {"error": f"Too many token ids (max {MAX_BOOKS})"}
    books = (rest_book(sim, str(item.get("token_id", ""))) for item in body)
    return 200, [b for b in books if b is not None]  # unknown ids are silently omitted


def _side_price(market: Market, token: str, side: str) -> str:
    bid, ask = market.top_of(token)
    value = bid if side == "BUY" else ask  # live: BUY → best bid (the docs say the reverse)
    return "0" if value is None else fmt_price(value)


async def _price(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    side = q.get("side", "").upper()
    if side not in ("BUY", "SELL"):
        return 400, {"error": "Invalid side"}
    market = _market(sim, q.get("token_id", ""))
    if market is None:
        return 404, NO_BOOK
    return 200, {"price": _side_price(market, q["token_id"], side)}


async def _prices(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
        return 400, {"error": "Invalid payload"}
    out: dict[str, dict[str, str]] = {}
    for item in body:
        token, side = str(item.get("token_id", "")), str(item.get("side", "")).upper()
        market = _market(sim, token)
        if market is not None and side in ("BUY", "SELL"):
            out.setdefault(token, {})[side] = _side_price(market, token, side)
    return 200, out


def _mid_of(sim: Simulator, token: str) -> str | None:
    market = _market(sim, token)
    if market is None:
        return None
    bid, ask = market.top_of(token)
    return fmt_mid(bid, ask) if bid is not None and ask is not None else ""


async def _midpoint(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    mid = _mid_of(sim, q.get("token_id", ""))
    return (404, NO_BOOK) if mid is None else (200, {"mid": mid})


async def _midpoints(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
        return 400, {"error": "Invalid payload"}
    mids = {str(i.get("token_id", "")): _mid_of(sim, str(i.get("token_id", ""))) for i in body}
    return 200, {t: m for t, m in mids.items() if m is not None}


async def _spread(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    market = _market(sim, q.get("token_id", ""))
    if market is None:
        return 404, NO_BOOK
    bid, ask = market.top_of(q["token_id"])
    return 200, {"spread": "" if bid is None or ask is None else fmt_price(ask - bid)}


async def _last_trade(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    market = _market(sim, q.get("token_id", ""))
    if market is None:
        return 404, NO_BOOK
    last = market.last_trade_of(q["token_id"])
    if last is None:
        return 200, {"price": "0.5", "side": ""}
    side = (
        market.last_side
        if q["token_id"] == market.yes
        else ("SELL" if market.last_side == "BUY" else "BUY")
    )
    return 200, {"price": fmt_price(last), "side": side}


async def _tick_size(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    if not q.get("token_id"):
        return 400, {"error": "Invalid token id"}
    market = _market(sim, q["token_id"])
    if market is None:
        return 404, {"error": "market not found"}
    return 200, {"minimum_tick_size": market.tick / ONE}  # a JSON number, as live


async def _neg_risk(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    market = _market(sim, q.get("token_id", ""))
    return (404, {"error": "market not found"}) if market is None else (200, {"neg_risk": False})


ROUTES = {
    ("GET", "/book"): _book,
    ("POST", "/books"): _books,
    ("GET", "/price"): _price,
    ("POST", "/prices"): _prices,
    ("GET", "/midpoint"): _midpoint,
    ("POST", "/midpoints"): _midpoints,
    ("GET", "/spread"): _spread,
    ("GET", "/last-trade-price"): _last_trade,
    ("GET", "/tick-size"): _tick_size,
    ("GET", "/neg-risk"): _neg_risk,
}

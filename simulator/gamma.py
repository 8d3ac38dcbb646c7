"""The Gamma twin: `GET /markets` with its quirks (ids and outcomes are JSON *strings*).

Protocol V2 markets (`version: "v2"`) list their outcome ids in `positionIds`, a real array,
instead of `clobTokenIds` (PROTOCOL.md §1, §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from polybus.simulator.market import Market
from polybus.simulator.rest import Reply, fmt_mid
from polybus.simulator.units import ONE


if TYPE_CHECKING:
    from polybus.simulator.server import Simulator

__all__ = ["ROUTES", "gamma_market"]

SORTABLE = frozenset({"volume24hr", "volumeNum", "liquidityNum", "id"})


def _num(pips: int | None) -> float | None:
    return None if pips is None else pips / ONE


def gamma_market(m: Market) -> dict[str, Any]:
    """One `/markets` object."""
    bid, ask = m.top()
    low, high = bid or 0, ask or ONE
    prices = (
        [fmt_mid(low, high), fmt_mid(ONE - high, ONE - low)]
        if m.active
        else (["1", "0"] if m.winner == m.yes else ["0", "1"])
    )
    liquidity = sum(p * s for p, s in m.bids.items()) + sum(
        (ONE - p) * s for p, s in m.asks.items()
    )
    out: dict[str, Any] = {
        "id": m.id,
        "question": m.question,
        "conditionId": m.condition_id,
        "slug": m.slug,
        "endDate": "2027-12-31T12:00:00Z",
        "outcomes": '["Yes", "No"]',
        "outcomePrices": orjson.dumps(prices).decode(),
        "active": m.active,
        "closed": not m.active,
        "acceptingOrders": m.active,
        "enableOrderBook": True,
        "orderPriceMinTickSize": m.tick / ONE,
        "orderMinSize": 5,
        "volume24hr": m.volume24hr,
        "volumeNum": round(m.volume24hr * 7.3 + m.volume, 2),
        "liquidityNum": round(liquidity / 1_000_000, 2),
        "bestBid": _num(bid),
        "bestAsk": _num(ask),
        "lastTradePrice": _num(m.last_trade) or 0,
        "spread": _num(None if bid is None or ask is None else ask - bid),
        "negRisk": False,
        "feesEnabled": False,
        "version": m.version,
    }
    if m.version == "v2":
        out["positionIds"] = list(m.tokens)
    else:
        out["clobTokenIds"] = orjson.dumps(list(m.tokens)).decode()
    return out


def _flag(q: dict[str, str], name: str) -> bool | None:
    value = q.get(name)
    return None if value is None else value.lower() == "true"


async def _markets(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    try:
        limit = min(int(q.get("limit", "100")), 500)
        offset = int(q.get("offset", "0"))
    except ValueError:
        return 422, {"error": "limit and offset must be integers"}
    closed = _flag(q, "closed")
    active = _flag(q, "active")
    items = [
        m
        for m in sim.engine.markets()
        if (not m.active) == bool(closed) and (active is None or m.active == active)
    ]
    if "clob_token_ids" in q:
        wanted = set(q["clob_token_ids"].split(","))
        items = [m for m in items if wanted & set(m.tokens)]
    if "condition_ids" in q:
        conds = set(q["condition_ids"].split(","))
        items = [m for m in items if m.condition_id in conds]
    objects = [gamma_market(m) for m in items]
    order = q.get("order")
    if order in SORTABLE:
        descending = q.get("ascending", "true").lower() == "false"
        objects.sort(key=lambda o: float(o[order] or 0), reverse=descending)
    return 200, objects[max(0, offset) : max(0, offset) + max(0, limit)]


ROUTES = {("GET", "/markets"): _markets}

"""The simulator's HTTP side: CLOB REST twin, Gamma `/markets` twin, and test controls.

A minimal HTTP/1.1 server (websockets' parser takes no POST bodies): GET and POST with
Content-Length, one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import orjson

from simulator.engine import fmt_price


if TYPE_CHECKING:
    from simulator.server import Simulator

__all__ = ["serve_http"]

Reply = tuple[int, Any]
NO_BOOK = {"error": "No orderbook exists for the requested token id"}


def _rest_book(sim: Simulator, token: str) -> dict[str, Any] | None:
    """`GET /book` shape: bids ascending, asks descending (as live), strings everywhere."""
    market = sim.engine.by_token.get(token)
    if market is None or not market.active:
        return None
    msg = sim.engine.book_msg(token, initial=False)
    last = market.last_trade.get(token)
    return {"market": msg["market"], "asset_id": token, "timestamp": msg["timestamp"],
            "hash": msg["hash"], "bids": msg["bids"], "asks": msg["asks"],
            "min_order_size": "5", "tick_size": fmt_price(market.tick), "neg_risk": False,
            "last_trade_price": fmt_price(last) if last is not None else ""}


def _book(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    book = _rest_book(sim, q.get("token_id", ""))
    return (200, book) if book else (404, NO_BOOK)


def _books(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    if not isinstance(body, list):
        return 400, {"error": "body must be an array of {token_id}"}
    if len(body) > 500:
        return 400, {"error": "too many token ids (max 500)"}
    books = [_rest_book(sim, str(item.get("token_id", ""))) for item in body
             if isinstance(item, dict)]
    return 200, [b for b in books if b]


def _price(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    market = sim.engine.by_token.get(q.get("token_id", ""))
    side = q.get("side", "").upper()
    if market is None or side not in ("BUY", "SELL"):
        return 400, {"error": "Invalid token id or side"}
    bid, ask = market.best(q["token_id"])
    value = bid if side == "BUY" else ask  # live: BUY → best bid (the docs say the reverse)
    return 200, {"price": fmt_price(value) if value is not None else "0"}


def _midpoint(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    market = sim.engine.by_token.get(q.get("token_id", ""))
    if market is None:
        return 404, NO_BOOK
    bid, ask = market.best(q["token_id"])
    if bid is None or ask is None:
        return 200, {"mid": ""}
    whole = bid + ask  # mid = whole / 2 pips, exact as a decimal
    mid = fmt_price(whole // 2) if whole % 2 == 0 else fmt_price(whole // 2) + "5"
    return 200, {"mid": mid}


def _tick_size(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    market = sim.engine.by_token.get(q.get("token_id", ""))
    if market is None:
        return 400, {"error": "Invalid token id"}
    return 200, {"minimum_tick_size": market.tick / 10_000}


def _gamma_market(sim: Simulator, m: Any) -> dict[str, Any]:
    bid, ask = m.best(m.yes)
    last = m.last_trade.get(m.yes)
    mid = (bid + ask) / 20_000 if bid is not None and ask is not None else 0.5
    return {"id": m.id, "conditionId": m.condition_id, "question": m.question, "slug": m.slug,
            "clobTokenIds": orjson.dumps([m.yes, m.no]).decode(),
            "outcomes": '["Yes", "No"]',
            "outcomePrices": orjson.dumps([f"{mid:.4f}", f"{1 - mid:.4f}"]).decode(),
            "active": m.active, "closed": not m.active, "acceptingOrders": m.active,
            "enableOrderBook": True, "orderPriceMinTickSize": m.tick / 10_000,
            "orderMinSize": 5, "volume24hr": round(m.volume, 2), "volumeNum": round(m.volume, 2),
            "liquidityNum": float(sum(m.bids.values()) + sum(m.asks.values())) / 100,
            "bestBid": bid / 10_000 if bid is not None else None,
            "bestAsk": ask / 10_000 if ask is not None else None,
            "lastTradePrice": last / 10_000 if last is not None else 0,
            "version": "v1"}


def _markets(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
    closed = q.get("closed", "false").lower() == "true"
    items = [m for m in sim.engine.markets() if (not m.active) == closed]
    if "active" in q:
        items = [m for m in items if m.active == (q["active"].lower() == "true")]
    offset, limit = int(q.get("offset", "0") or 0), int(q.get("limit", "100") or 100)
    return 200, [_gamma_market(sim, m) for m in items[offset : offset + limit]]


def _control(action: Callable[[Simulator, dict[str, str]], Any]) -> Callable[..., Reply]:
    def handler(sim: Simulator, q: dict[str, str], body: Any) -> Reply:
        result = action(sim, q)
        return 200, result if result is not None else {"ok": True}
    return handler


def _truth(sim: Simulator, q: dict[str, str]) -> Any:
    bids, asks = sim.engine.true_book(q.get("token_id", ""))
    return {"bids": bids, "asks": asks}


def _tokens(sim: Simulator, q: dict[str, str]) -> Any:
    return sim.engine.tokens()


def _stall(sim: Simulator, q: dict[str, str]) -> None:
    for conn in sim.connections:
        conn.faults.stall = q.get("on", "1") == "1"


ROUTES: dict[tuple[str, str], Callable[..., Reply]] = {
    ("GET", "/book"): _book,
    ("POST", "/books"): _books,
    ("GET", "/price"): _price,
    ("GET", "/midpoint"): _midpoint,
    ("GET", "/tick-size"): _tick_size,
    ("GET", "/markets"): _markets,
    ("GET", "/_sim/tokens"): _control(_tokens),
    ("GET", "/_sim/truth"): _control(_truth),
    ("POST", "/_sim/drop"): _control(lambda sim, q: sim.drop_all()),
    ("POST", "/_sim/stall"): _control(_stall),
    ("POST", "/_sim/resume"): _control(lambda sim, q: sim.resume()),
}


async def _dispatch(sim: Simulator, method: str, target: str, body: bytes) -> Reply:
    parts = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if (method, parts.path) == ("POST", "/_sim/pause"):
        await sim.pause()
        return 200, {"ok": True}
    handler = ROUTES.get((method, parts.path))
    if handler is None:
        return 404, {"error": "not found"}
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return 400, {"error": "body is not JSON"}
    try:
        return handler(sim, query, payload)
    except (KeyError, ValueError) as exc:
        return 400, {"error": str(exc)}


async def serve_http(sim: Simulator, host: str, port: int) -> asyncio.Server:
    """Serve the REST twin, Gamma twin and `/_sim/*` controls."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError,
                                 TimeoutError):
            request = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1").split()
            length = 0
            while (line := (await reader.readline()).decode("latin-1").strip()):
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            status, payload = await _dispatch(sim, request[0], request[1], body)
            data = orjson.dumps(payload)
            writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                         "Connection: close\r\n\r\n".encode() + data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)

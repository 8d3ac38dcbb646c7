"""Exchange-format messages, built as dicts in live key order and rendered once with orjson.

Live objects end with `event_type`, spell every number as a string and list book levels
worst first (bids ascending, asks descending); the builders here keep all three. Pure.
"""

from __future__ import annotations

from typing import Any

import orjson

from polybus.simulator.market import Market, Top
from polybus.simulator.units import ONE, fmt_price, fmt_size, padded_price, tick_str


__all__ = [
    "Msg",
    "best_bid_ask",
    "book",
    "crossed_pair",
    "last_trade_price",
    "legacy_price_changes",
    "market_resolved",
    "new_market",
    "price_change",
    "regressed",
    "render",
    "tick_size_change",
    "tokens_of",
    "unknown_event",
]

Msg = dict[str, Any]

LIFECYCLE = frozenset({"new_market", "market_resolved"})
"""Global broadcasts: every custom-feature connection gets them, subscribed or not."""


def render(msg: Msg | list[Msg]) -> bytes:
    """The frame text of one message (or an array of them)."""
    return orjson.dumps(msg)


def tokens_of(msg: Msg) -> tuple[str, ...]:
    """The asset ids a message is about (both legs for a price_change)."""
    changes = msg.get("price_changes")
    if changes is not None:
        return tuple(c["asset_id"] for c in changes)
    return (msg["asset_id"],) if "asset_id" in msg else ()


def _levels(levels: dict[int, int], reverse: bool) -> list[dict[str, str]]:
    return [
        {"price": fmt_price(p), "size": fmt_size(s)}
        for p, s in sorted(levels.items(), reverse=reverse)
    ]


def book(m: Market, token: str, ts: str, digest: str, initial: bool) -> Msg:
    """A `book` snapshot, worst first; initial ones also carry tick size and last trade."""
    bids, asks = m.levels(token)
    msg: Msg = {
        "market": m.condition_id,
        "asset_id": token,
        "timestamp": ts,
        "hash": digest,
        "bids": _levels(bids, reverse=False),
        "asks": _levels(asks, reverse=True),
    }
    if initial:
        last = m.last_trade_of(token)
        msg["tick_size"] = tick_str(m.tick)
        # Live spells it padded ("0.480"); clients must not compare it textually.
        msg["last_trade_price"] = "" if last is None else padded_price(last)
    msg["event_type"] = "book"
    return msg


def _bests(top: Top) -> tuple[str, str]:
    """Tops as price_change spells them: "0"/"1" stand for an empty side (docs example)."""
    bid, ask = top
    return ("0" if bid is None else fmt_price(bid), "1" if ask is None else fmt_price(ask))


def price_change(
    m: Market,
    buy: bool,
    price: int,
    size: int,
    ts: str,
    hashes: tuple[str, str],
    yes_first: bool,
    top: Top | None = None,
) -> Msg:
    """One order event on YES (side `buy`, price, new absolute size) with its NO mirror leg."""
    bid, ask = top if top is not None else m.top()
    yes_bid, yes_ask = _bests((bid, ask))
    no_bid, no_ask = _bests(
        (None if ask is None else ONE - ask, None if bid is None else ONE - bid)
    )
    spelled = fmt_size(size)
    yes = {
        "asset_id": m.yes,
        "price": fmt_price(price),
        "size": spelled,
        "side": "BUY" if buy else "SELL",
        "hash": hashes[0],
        "best_bid": yes_bid,
        "best_ask": yes_ask,
    }
    no = {
        "asset_id": m.no,
        "price": fmt_price(ONE - price),
        "size": spelled,
        "side": "SELL" if buy else "BUY",
        "hash": hashes[1],
        "best_bid": no_bid,
        "best_ask": no_ask,
    }
    return {
        "market": m.condition_id,
        "price_changes": [yes, no] if yes_first else [no, yes],
        "timestamp": ts,
        "event_type": "price_change",
    }


def last_trade_price(
    m: Market, token: str, price: int, size: int, side: str, ts: str, tx: str
) -> Msg:
    """A fill, seen from `token` with the taker's side."""
    return {
        "market": m.condition_id,
        "asset_id": token,
        "price": fmt_price(price),
        "size": fmt_size(size),
        "fee_rate_bps": "0",
        "side": side,
        "timestamp": ts,
        "transaction_hash": tx,
        "event_type": "last_trade_price",
    }


def tick_size_change(m: Market, token: str, old: int, new: int, ts: str) -> Msg:
    return {
        "market": m.condition_id,
        "asset_id": token,
        "old_tick_size": tick_str(old),
        "new_tick_size": tick_str(new),
        "timestamp": ts,
        "event_type": "tick_size_change",
    }


def best_bid_ask(m: Market, token: str, ts: str) -> Msg:
    bid, ask = m.top_of(token)
    spread = "" if bid is None or ask is None else fmt_price(ask - bid)
    return {
        "market": m.condition_id,
        "asset_id": token,
        "best_bid": "" if bid is None else fmt_price(bid),
        "best_ask": "" if ask is None else fmt_price(ask),
        "spread": spread,
        "timestamp": ts,
        "event_type": "best_bid_ask",
    }


def new_market(m: Market, ts: str) -> Msg:
    """The §3.6 `new_market` broadcast with the live extras."""
    desc = f"Resolves Yes if simulated event #{m.index} happens."
    tokens = list(m.tokens)
    return {
        "id": m.id,
        "question": m.question,
        "market": m.condition_id,
        "slug": m.slug,
        "description": desc,
        "assets_ids": tokens,
        "outcomes": ["Yes", "No"],
        "event_message": {
            "id": str(900_000 + m.index),
            "ticker": m.slug,
            "slug": m.slug,
            "title": m.question,
            "description": desc,
        },
        "timestamp": ts,
        "tags": ["Simulated"],
        "condition_id": m.condition_id,
        "active": True,
        "clob_token_ids": tokens,
        "sports_market_type": "",
        "line": "",
        "game_start_time": "",
        "order_price_min_tick_size": tick_str(m.tick),
        "group_item_title": "",
        "taker_base_fee": "0",
        "fees_enabled": False,
        "fee_schedule": {"exponent": "1", "rate": "0", "taker_only": True, "rebate_rate": "0"},
        "event_type": "new_market",
    }


def market_resolved(m: Market, ts: str) -> Msg:
    """The live `market_resolved` shape: no question/slug, `event_message` null."""
    return {
        "id": m.id,
        "market": m.condition_id,
        "assets_ids": list(m.tokens),
        "winning_asset_id": m.winner,
        "winning_outcome": "Yes" if m.winner == m.yes else "No",
        "event_message": None,
        "timestamp": ts,
        "tags": ["Simulated"],
        "event_type": "market_resolved",
    }


def legacy_price_changes(msg: Msg, wanted: set[str]) -> list[Msg]:
    """The pre-2025-09-15 shape: one object per (wanted) asset with `changes`, no tops."""
    return [
        {
            "asset_id": c["asset_id"],
            "market": msg["market"],
            "hash": c["hash"],
            "timestamp": msg["timestamp"],
            "changes": [{"price": c["price"], "side": c["side"], "size": c["size"]}],
            "event_type": "price_change",
        }
        for c in msg["price_changes"]
        if c["asset_id"] in wanted
    ]


def regressed(msg: Msg, ms: int) -> Msg:
    """The same message with a timestamp `ms` older (live delivery order is not time order)."""
    return {**msg, "timestamp": str(int(msg["timestamp"]) - ms), "event_type": msg["event_type"]}


def unknown_event(token: str, market: str, ts: str) -> Msg:
    """An object of an event type no client knows (the exchange adds types without notice)."""
    return {
        "market": market,
        "asset_id": token,
        "timestamp": ts,
        "seq_hint": "1",
        "event_type": "book_delta_v3",
    }


def crossed_pair(m: Market, ts: str, hashes: tuple[str, str, str, str]) -> list[Msg]:
    """A YES bid flashed at the best ask (a crossed book), then removed again.

    The second frame restores the truth exactly: there is never a real YES bid at the best
    ask price, so size 0 there is right.
    """
    bid, ask = m.top()
    if ask is None:
        return []
    size = m.asks[ask]
    flash = price_change(m, True, ask, size, ts, hashes[:2], yes_first=True, top=(ask, ask))
    fix = price_change(m, True, ask, 0, ts, hashes[2:], yes_first=False, top=(bid, ask))
    return [flash, fix]

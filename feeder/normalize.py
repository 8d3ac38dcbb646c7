"""The sans-I/O normalizer: one market-channel frame in, normalized events out.

`Normalizer.feed(raw, rx)` is synchronous and deterministic; it never awaits and does no I/O
(like websockets' `Protocol.receive_data`). It knows which tokens its connection subscribed,
so events of other tokens (the other leg of a binary market) are filtered and counted, never
half-published. Whatever cannot be used is returned for quarantine with a reason.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from wire.canon import canon
from wire.errors import DecodeError, InvalidToken
from wire.events import (
    BestBidAsk,
    Book,
    Event,
    Level,
    MarketEvent,
    PriceChange,
    Side,
    TickSizeChange,
    Trade,
)
from wire.keys import validate_token


__all__ = ["Normalized", "Normalizer"]

DEDUP_WINDOW = 256
"""Exact duplicate frames within this many recent data frames are dropped."""

_SIDES: dict[str, Side] = {"BUY": "bid", "SELL": "ask"}
_TEXT = {"PONG": "filtered.pong", "INVALID OPERATION": "filtered.invalid_operation"}


class _Skip(Exception):
    """An element that cannot be used; carries the quarantine reason."""


@dataclass(slots=True)
class Normalized:
    """What one frame produced."""

    events: list[Event] = field(default_factory=list)
    markets: list[MarketEvent] = field(default_factory=list)
    quarantine: list[tuple[str, str]] = field(default_factory=list)
    data: bool = False
    pong: bool = False


def _need(obj: dict[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is None:
        raise _Skip(f"missing_field:{name}")
    return value


def _num(value: Any) -> str:
    if not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        else:
            raise _Skip("bad_number")
    try:
        return canon(value)
    except DecodeError:
        raise _Skip("bad_number") from None


def _opt_num(value: Any) -> str:
    if value is None or value == "":
        return ""
    return _num(value)


def _token(value: Any) -> str:
    try:
        return validate_token(value)
    except InvalidToken:
        raise _Skip("bad_token") from None


def _levels(raw: Any, descending: bool) -> tuple[Level, ...]:
    """Levels sorted best first (live order is worst first); zero sizes dropped, last wins."""
    if not isinstance(raw, list):
        raise _Skip("bad_levels")
    sizes: dict[str, str] = {}
    for level in raw:
        if not isinstance(level, dict):
            raise _Skip("bad_levels")
        sizes[_num(_need(level, "price"))] = _num(_need(level, "size"))
    kept = [(p, s) for p, s in sizes.items() if s != "0"]
    kept.sort(key=lambda lv: Decimal(lv[0]), reverse=descending)
    return tuple(kept)


class Normalizer:
    """Turns the frames of one connection into events, filtering foreign tokens."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self.tokens: set[str] = set(tokens)
        self.counts: Counter[str] = Counter()
        self._recent: deque[str] = deque()
        self._recent_set: set[str] = set()
        self._parsers: dict[str, Callable[[dict[str, Any], Normalized], None]] = {
            "book": self._book,
            "price_change": self._price_change,
            "last_trade_price": self._trade,
            "tick_size_change": self._tick_size_change,
            "best_bid_ask": self._best_bid_ask,
            "new_market": self._new_market,
            "market_resolved": self._market_resolved,
        }

    def subscribe(self, tokens: Iterable[str]) -> None:
        """Accept events of these tokens from now on."""
        self.tokens.update(tokens)

    def unsubscribe(self, tokens: Iterable[str]) -> None:
        """Filter events of these tokens from now on."""
        self.tokens.difference_update(tokens)

    # --- frames ---------------------------------------------------------------------------
    def feed(self, raw: bytes | str, rx: int) -> Normalized:
        """Normalize one WebSocket text frame received at `rx` (µs)."""
        out = Normalized()
        counts = self.counts
        counts["frames"] += 1
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        control = _TEXT.get(text.strip()) if len(text) < 32 else None
        if control is not None:
            counts[control] += 1
            out.pong = control == "filtered.pong"
            return out
        out.data = True
        if self._seen(text):
            counts["filtered.duplicate"] += 1
            return out
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            counts["quarantine.malformed_json"] += 1
            out.quarantine.append((text, "malformed_json"))
            return out
        for element in value if isinstance(value, list) else (value,):
            self._element(element, out)
        return out

    def _seen(self, text: str) -> bool:
        """True for an exact repeat of a recent frame (a resend or a duplicated frame)."""
        if text in self._recent_set:
            return True
        self._recent.append(text)
        self._recent_set.add(text)
        if len(self._recent) > DEDUP_WINDOW:
            self._recent_set.discard(self._recent.popleft())
        return False

    def _element(self, element: Any, out: Normalized) -> None:
        if not isinstance(element, dict):
            self._quarantine(element, "not_an_object", out)
            return
        kind = element.get("event_type")
        if kind is None and "bids" in element and "asks" in element and "asset_id" in element:
            kind = "book"  # some initial snapshots came without event_type
        parser = self._parsers.get(kind) if isinstance(kind, str) else None
        if parser is None:
            self._quarantine(element, "unknown_event_type", out)
            return
        try:
            parser(element, out)
        except _Skip as skip:
            self._quarantine(element, str(skip), out)

    def _quarantine(self, element: Any, reason: str, out: Normalized) -> None:
        self.counts[f"quarantine.{reason.split(':')[0]}"] += 1
        out.quarantine.append((orjson.dumps(element).decode(), reason))

    def _ours(self, token: str) -> bool:
        if token in self.tokens:
            return True
        self.counts["filtered.foreign_token"] += 1
        return False

    def _emit(self, event: Event, out: Normalized) -> None:
        self.counts[f"event.{event.type}"] += 1
        out.events.append(event)

    # --- event types ----------------------------------------------------------------------
    def _book(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"market":"0xa4…","asset_id":"7043…","timestamp":"1791201600123","hash":"d440…",
        "bids":[{"price":"0.45","size":"1200"},…],"asks":[…],"tick_size":"0.01",
        "event_type":"book","last_trade_price":"0.480"}`"""
        token = _token(_need(m, "asset_id"))
        bids = _levels(m["bids"] if "bids" in m else _need(m, "buys"), descending=True)
        asks = _levels(m["asks"] if "asks" in m else _need(m, "sells"), descending=False)
        if not self._ours(token):
            return
        self._emit(Book(
            asset_id=token, market=str(m.get("market") or ""), ts=str(m.get("timestamp") or ""),
            bids=bids, asks=asks, hash=str(m.get("hash") or ""), source="ws",
            tick_size=_opt_num(m.get("tick_size")),
            last_trade_price=_opt_num(m.get("last_trade_price")),
        ), out)

    def _price_change(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"market":"0xa4…","price_changes":[{"asset_id":"7043…","price":"0.48","size":"150",
        "side":"BUY","hash":"7328…","best_bid":"0.48","best_ask":"0.49"},…],
        "timestamp":"1791201601406","event_type":"price_change"}`"""
        ts = str(m.get("timestamp") or "")
        changes = m.get("price_changes")
        if changes is None:
            self._legacy_price_change(m, ts, out)
            return
        if not isinstance(changes, list):
            raise _Skip("bad_price_changes")
        for change in changes:
            try:
                self._change(change, ts, out)
            except _Skip as skip:  # one bad element must not discard its neighbours
                self._quarantine(change, str(skip), out)

    def _change(self, c: Any, ts: str, out: Normalized) -> None:
        if not isinstance(c, dict):
            raise _Skip("not_an_object")
        token = _token(_need(c, "asset_id"))
        side = _SIDES.get(_need(c, "side"))
        if side is None:
            raise _Skip("bad_side")
        price, size = _num(_need(c, "price")), _num(_need(c, "size"))
        best_bid, best_ask = _opt_num(c.get("best_bid")), _opt_num(c.get("best_ask"))
        if self._ours(token):
            self._emit(PriceChange(token, ts, side, price, size, best_bid, best_ask,
                                   str(c.get("hash") or "")), out)

    def _legacy_price_change(self, m: dict[str, Any], ts: str, out: Normalized) -> None:
        """Before 2025-09-15: `{"asset_id":"7043…","changes":[{"price":"0.48","side":"BUY",
        "size":"150"}],"event_type":"price_change","market":"0xa4…","hash":"6622…"}`, and
        2024's flat `price`/`side`/`size` at top level. Tops are not given: left empty."""
        token = _token(_need(m, "asset_id"))
        changes = m.get("changes")
        if changes is None:
            changes = [{"price": _need(m, "price"), "side": _need(m, "side"),
                        "size": _need(m, "size")}]
        if not isinstance(changes, list):
            raise _Skip("bad_changes")
        parsed = []
        for c in changes:
            if not isinstance(c, dict):
                raise _Skip("not_an_object")
            side = _SIDES.get(_need(c, "side"))
            if side is None:
                raise _Skip("bad_side")
            parsed.append((side, _num(_need(c, "price")), _num(_need(c, "size"))))
        if self._ours(token):
            digest = str(m.get("hash") or "")
            for side, price, size in parsed:
                self._emit(PriceChange(token, ts, side, price, size, "", "", digest), out)

    def _trade(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"market":"0xa4…","asset_id":"7043…","price":"0.51","size":"100","fee_rate_bps":"0",
        "side":"BUY","timestamp":"1791201603550","event_type":"last_trade_price",
        "transaction_hash":"0x08f8…"}`"""
        token = _token(_need(m, "asset_id"))
        price, size = _num(_need(m, "price")), _num(_need(m, "size"))
        fee = _opt_num(m.get("fee_rate_bps"))
        if self._ours(token):
            self._emit(Trade(token, str(m.get("timestamp") or ""), price, size,
                             str(m.get("side") or ""), fee, str(m.get("transaction_hash") or "")),
                       out)

    def _tick_size_change(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"event_type":"tick_size_change","asset_id":"5396…","market":"0x2aab…",
        "old_tick_size":"0.01","new_tick_size":"0.001","timestamp":"1791201610007"}`"""
        token = _token(_need(m, "asset_id"))
        old, new = _opt_num(m.get("old_tick_size")), _num(_need(m, "new_tick_size"))
        if self._ours(token):
            self._emit(TickSizeChange(token, str(m.get("timestamp") or ""), old, new), out)

    def _best_bid_ask(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"market":"0xa4…","asset_id":"7043…","best_bid":"0.48","best_ask":"0.51",
        "spread":"0.03","timestamp":"1791201603561","event_type":"best_bid_ask"}`"""
        token = _token(_need(m, "asset_id"))
        bid, ask = _opt_num(m.get("best_bid")), _opt_num(m.get("best_ask"))
        spread = _opt_num(m.get("spread"))
        if self._ours(token):
            self._emit(BestBidAsk(token, str(m.get("timestamp") or ""), bid, ask, spread), out)

    def _new_market(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"id":"2231457","question":"Will ETH…","market":"0xcc3f…","slug":"eth-…",
        "assets_ids":["5256…","3527…"],"outcomes":["Yes","No"],…,"event_type":"new_market",
        "order_price_min_tick_size":"0.01",…}` — a global broadcast, never filtered by token."""
        ids = m.get("assets_ids") or m.get("clob_token_ids") or []
        outcomes = m.get("outcomes") or []
        if not isinstance(ids, list) or not isinstance(outcomes, list):
            raise _Skip("bad_assets_ids")
        self.counts["event.new_market"] += 1
        out.markets.append(MarketEvent(
            kind="new_market", market=str(_need(m, "market")), id=str(m.get("id") or ""),
            asset_ids=tuple(_token(t) for t in ids), ts=str(m.get("timestamp") or ""),
            question=str(m.get("question") or ""), slug=str(m.get("slug") or ""),
            outcomes=tuple(str(o) for o in outcomes),
            tick_size=_opt_num(m.get("order_price_min_tick_size")),
        ))

    def _market_resolved(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"id":"2231457","market":"0xcc3f…","assets_ids":[…],"winning_asset_id":"5256…",
        "winning_outcome":"Yes","event_message":null,"timestamp":"1791736000512",
        "event_type":"market_resolved","tags":["Crypto"]}` — question/slug may be absent."""
        ids = m.get("assets_ids") or []
        if not isinstance(ids, list):
            raise _Skip("bad_assets_ids")
        self.counts["event.market_resolved"] += 1
        out.markets.append(MarketEvent(
            kind="market_resolved", market=str(_need(m, "market")), id=str(m.get("id") or ""),
            asset_ids=tuple(_token(t) for t in ids), ts=str(m.get("timestamp") or ""),
            question=str(m.get("question") or ""), slug=str(m.get("slug") or ""),
            winning_asset_id=str(m.get("winning_asset_id") or ""),
            winning_outcome=str(m.get("winning_outcome") or ""),
        ))

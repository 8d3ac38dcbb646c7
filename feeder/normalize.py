"""The sans-I/O normalizer: one market-channel frame in, normalized events out.

`Normalizer.feed(raw, rx)` is synchronous and deterministic; it never awaits and does no I/O
(like websockets' `Protocol.receive_data`). It knows which tokens its connection subscribed,
so events of other tokens (the other leg of a binary market) are filtered and counted, never
half-published. Whatever cannot be used is returned for quarantine with a reason, element by
element: one bad element never costs its neighbours (PROTOCOL.md §3.1).

Theory of operation, in the order `feed` applies it:
1. `PONG` / `INVALID OPERATION` / `NO NEW ASSETS` are plain text, recognised before any
   JSON parsing.
2. An exact repeat of one of the last `DEDUP_WINDOW` frames is dropped (resends, injected
   duplicates): sizes are absolute, but a repeated trade would be counted twice.
3. The frame is parsed once; an object or each element of an array is routed by the value of
   `event_type` through a dispatch dict (live objects put that key last: never sniff prefixes).
4. A token-scoped element is checked against the subscribed set before the rest is parsed, so
   a foreign leg costs a set lookup; lifecycle events are global and never filtered.

Every frame, event, filter and quarantine bumps a key of `counts` (`frames`, `event.<type>`,
`filtered.<why>`, `quarantine.<reason>`; reasons without their `:<field>` detail so the metric
labels stay few).

Total: `feed` never raises, whatever the bytes. Every number and text field passes its rule in
`wire/validate.py` or the element is quarantined: `bad_number` (not a number at all: `1_000`,
` 5`, `1e999999`), `out_of_range:<field>` (a number its field may not hold: price 7, size -5,
40 digits), `bad_field:<field>` (wrong type, or text too long). A quarantined text is always
storable: at most `QUARANTINE_TEXT_MAX` characters, valid UTF-8, and an element nested deeper
than orjson writes is kept clipped; at most `QUARANTINE_KEPT` items are kept per frame (the rest
are still counted). A bug that raises anyway quarantines its element as `internal_error`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeGuard

import orjson

from polybus.wire import validate
from polybus.wire.canon import canon
from polybus.wire.errors import DecodeError, InvalidToken
from polybus.wire.events import (
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
from polybus.wire.keys import validate_token


__all__ = ["DEDUP_WINDOW", "QUARANTINE_KEPT", "QUARANTINE_TEXT_MAX", "Normalized", "Normalizer"]

DEDUP_WINDOW = 256
"""An exact repeat of one of this many most recent distinct data frames is dropped."""
QUARANTINE_TEXT_MAX = 65536
"""A longer quarantined text keeps its head and says how much was cut (the stream keeps
10,000 entries: unclipped, a hostile upstream's megabyte frames would hold gigabytes)."""
QUARANTINE_KEPT = 100
"""Quarantine items kept per frame; a frame of a million bad elements costs one page of them."""
_CLIP_DEPTH = 64
"""Nesting kept when an element is too deep for orjson to write back (it reads 1024, writes
255); anything deeper is replaced by a marker."""

_SIDES: dict[str, Side] = {"BUY": "bid", "SELL": "ask"}
_TAKER_SIDES = frozenset(("BUY", "SELL"))
_CONTROL = {
    "PONG": "filtered.pong",
    "INVALID OPERATION": "filtered.invalid_operation",
    "NO NEW ASSETS": "filtered.no_new_assets",
}
_CONTROL_MAX = 64
"""Longer frames cannot be a control text; skip the strip() for them."""
_OLD_LEVEL_NAMES = {"bids": "buys", "asks": "sells"}


class _Skip(Exception):
    """An element that cannot be used; `reason` is the quarantine reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Normalized:
    """What one frame produced."""

    events: list[Event] = field(default_factory=list)
    """Token events in wire order, only for subscribed tokens."""
    markets: list[MarketEvent] = field(default_factory=list)
    """Lifecycle events (global broadcasts, never filtered by token)."""
    quarantine: list[tuple[str, str]] = field(default_factory=list)
    """(raw text of the frame or of the offending element, reason); at most QUARANTINE_KEPT
    items, each text storable and at most QUARANTINE_TEXT_MAX characters (then marked cut)."""
    data: bool = False
    """Anything but PONG / INVALID OPERATION: feeds the data-silence watchdog."""
    pong: bool = False
    """The frame was the text PONG: feeds the heartbeat deadline."""


_Parser = Callable[[dict[str, Any], Normalized], None]


# --- field readers: each raises _Skip with the reason the element is quarantined for -------

_Rule = Callable[[str], str]


def _num(value: Any, name: str, rule: _Rule) -> str:
    """A required number, canonical and valid by `rule` (wire/validate.py). The exchange sends
    strings; bare JSON numbers are read too (a float's repr is the shortest text that
    round-trips, i.e. what was sent)."""
    if value.__class__ is not str:
        if value.__class__ is not int and value.__class__ is not float:
            raise _Skip(f"missing_field:{name}" if value is None else "bad_number")
        value = repr(value)
    try:
        return rule(value)
    except DecodeError:
        raise _Skip(_why(value, name)) from None


def _why(value: str, name: str) -> str:
    """Why a number failed its rule: not a number at all, or one its field may not hold."""
    try:
        canon(value)
    except DecodeError:
        return "bad_number"
    return f"out_of_range:{name}"


def _opt_num(value: Any, name: str, rule: _Rule) -> str:
    """An optional number: "" when absent, null or empty (e.g. no last trade yet)."""
    if value is None or value == "":
        return ""
    return _num(value, name, rule)


def _text(m: dict[str, Any], name: str, limit: int = validate.ID_MAX) -> str:
    """An optional string of at most `limit` characters (ids may arrive as JSON integers):
    "" when absent or null."""
    value = m.get(name)
    if value.__class__ is str:
        if len(value) > limit:
            raise _Skip(f"bad_field:{name}")
        return value
    if value is None:
        return ""
    if value.__class__ is int:
        return str(value)
    raise _Skip(f"bad_field:{name}")


def _need_text(m: dict[str, Any], name: str) -> str:
    """A required, non-empty string."""
    value = _text(m, name)
    if not value:
        raise _Skip(f"missing_field:{name}")
    return value


def _ts(m: dict[str, Any]) -> str:
    """The exchange's Unix-ms timestamp, kept as its string; "" when absent."""
    value = _text(m, "timestamp")
    try:
        return validate.timestamp(value)
    except DecodeError:
        raise _Skip("bad_number") from None


def _token(value: Any) -> str:
    """A token id (a decimal string of 1..100 digits)."""
    if value is None:
        raise _Skip("missing_field:asset_id")
    if value.__class__ is not str:  # never format a deep or huge foreign value
        raise _Skip("bad_token")
    try:
        return validate_token(value)
    except InvalidToken:
        raise _Skip("bad_token") from None


_price, _size, _top, _tick = validate.price, validate.size, validate.top, validate.tick
_LABEL = validate.LABEL_MAX


_price_key = itemgetter(0)
"""Canonical prices in (0, 1) sort as text exactly as they sort as numbers: "0.4" < "0.45"."""


def _levels(raw: Any, name: str, descending: bool) -> tuple[Level, ...]:
    """Levels sorted best first whatever order they came in (live order is worst first);
    size-0 levels dropped; a price listed twice keeps its last size."""
    if raw.__class__ is not list:
        raise _Skip(f"bad_field:{name}")
    sizes: dict[str, str] = {}
    for level in raw:
        if level.__class__ is not dict:
            raise _Skip(f"bad_field:{name}")
        sizes[_num(level.get("price"), "price", _price)] = _num(level.get("size"), "size", _size)
    kept = [level for level in sizes.items() if level[1] != "0"]
    kept.sort(key=_price_key, reverse=descending)
    return tuple(kept)


def _book_levels(m: dict[str, Any], name: str) -> Any:
    """`bids`, else the old docs' `buys` (`asks`/`sells` likewise)."""
    value = m.get(name)
    if value is None:
        value = m.get(_OLD_LEVEL_NAMES[name])
        if value is None:
            raise _Skip(f"missing_field:{name}")
    return value


def _side(c: dict[str, Any]) -> Side:
    """A price change's BUY/SELL as the book side it changes."""
    value = c.get("side")
    side = _SIDES.get(value) if isinstance(value, str) else None
    if side is None:
        raise _Skip("missing_field:side" if value is None else "bad_side")
    return side


def _list(m: dict[str, Any], *names: str) -> list[Any]:
    """The first non-empty of several list fields; Gamma-style JSON-encoded lists are decoded."""
    for name in names:
        value = m.get(name)
        if not value:
            continue
        if value.__class__ is str:
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise _Skip(f"bad_field:{name}") from None
        if value.__class__ is not list:
            raise _Skip(f"bad_field:{name}")
        return value
    return []


class Normalizer:
    """Turns the frames of one connection into events, filtering foreign tokens."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self.tokens: set[str] = set()
        """The tokens this connection subscribed; others' events are filtered."""
        self.counts: Counter[str] = Counter()
        self._recent: deque[int] = deque()
        self._recent_set: set[int] = set()
        self._parsers: dict[str, _Parser] = {
            "book": self._book,
            "price_change": self._price_change,
            "last_trade_price": self._trade,
            "tick_size_change": self._tick_size_change,
            "best_bid_ask": self._best_bid_ask,
            "new_market": self._new_market,
            "market_resolved": self._market_resolved,
        }
        self.subscribe(tokens)

    def subscribe(self, tokens: Iterable[str]) -> None:
        """Accept events of these tokens from now on; raises InvalidToken for a bad id.

        The server answers a subscribe with fresh snapshots, which may repeat an earlier frame
        byte for byte (a book that did not change), so the duplicate window starts afresh.
        """
        new = {validate_token(t) for t in tokens} - self.tokens
        if new:
            self.tokens |= new
            self._recent.clear()
            self._recent_set.clear()

    def unsubscribe(self, tokens: Iterable[str]) -> None:
        """Filter events of these tokens from now on."""
        self.tokens.difference_update(tokens)

    # --- frames -------------------------------------------------------------------------
    def feed(self, raw: bytes | str, rx: int) -> Normalized:
        """Normalize one WebSocket text frame received at `rx` (µs; kept for future use).
        Never raises: whatever cannot be used is counted and returned for quarantine."""
        out = Normalized()
        self.counts["frames"] += 1
        try:
            self._feed(raw, out)
        except Exception as exc:  # a bug must cost this frame, never the connection
            out.data = True
            self._keep(_as_text(raw), f"internal_error:{type(exc).__name__}", out)
        return out

    def _feed(self, raw: bytes | str, out: Normalized) -> None:
        if isinstance(raw, str):
            text = raw
        else:
            try:
                text = bytes(raw).decode()
            except UnicodeDecodeError:  # JSON is UTF-8: this cannot be a frame we can read
                out.data = True
                self._keep(_as_text(raw), "malformed_json", out)
                return
        if len(text) < _CONTROL_MAX:
            control = _CONTROL.get(text.strip())
            if control is not None:
                self.counts[control] += 1
                out.pong = control == "filtered.pong"
                return
        out.data = True
        if self._repeat(text):
            self.counts["filtered.duplicate"] += 1
            return
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:  # also a str with lone surrogates, or nesting > 1024
            self._keep(text, "malformed_json", out)
            return
        if value.__class__ is list:
            for element in value:
                self._element(element, None, out)
        else:
            self._element(value, text, out)

    def _repeat(self, text: str) -> bool:
        """True for an exact repeat of a recent frame (a resend or an injected duplicate).
        `[]` carries nothing (every unknown token is answered with one), so it is exempt.
        The window keeps the frames' hashes, not their text: 256 one-megabyte frames must not
        cost 256 MB. (str hashes are 64-bit and salted per process: a false repeat is as
        likely as a cosmic ray, and nobody can craft one.)"""
        if text == "[]":
            return False
        key = hash(text)
        if key in self._recent_set:
            return True
        self._recent.append(key)
        self._recent_set.add(key)
        if len(self._recent) > DEDUP_WINDOW:
            self._recent_set.discard(self._recent.popleft())
        return False

    def _element(self, element: Any, text: str | None, out: Normalized) -> None:
        """Route one object by its `event_type`; `text` is its raw text when it is the frame."""
        if element.__class__ is not dict:
            self._quarantine(element, None, "not_an_object", out)
            return
        kind = element.get("event_type")
        parser = self._parsers.get(kind) if kind.__class__ is str else None
        if parser is None:
            if kind is not None or not _looks_like_book(element):
                self._quarantine(element, text, "unknown_event_type", out)
                return
            parser = self._book  # a few clients saw initial books without event_type
        try:
            parser(element, out)
        except _Skip as skip:
            self._quarantine(element, text, skip.reason, out)
        except Exception as exc:  # a bug must cost this element, never its neighbours
            self._quarantine(element, text, f"internal_error:{type(exc).__name__}", out)

    def _quarantine(self, element: Any, text: str | None, reason: str, out: Normalized) -> None:
        """Keep the raw text when the element is the whole frame, else re-serialise it."""
        if text is None and len(out.quarantine) < QUARANTINE_KEPT:
            try:
                text = orjson.dumps(element).decode()
            except orjson.JSONEncodeError:  # nested deeper than orjson writes
                text = orjson.dumps(_clip(element, _CLIP_DEPTH)).decode()
        self._keep(text or "", reason, out)

    def _keep(self, text: str, reason: str, out: Normalized) -> None:
        """Count a quarantine and keep its item: storable text, at most QUARANTINE_KEPT."""
        self.counts["quarantine." + reason.partition(":")[0]] += 1
        if len(out.quarantine) >= QUARANTINE_KEPT:
            self.counts["quarantine_not_kept"] += 1
            return
        if len(text) > QUARANTINE_TEXT_MAX:
            cut = len(text) - QUARANTINE_TEXT_MAX
            text = f"{text[:QUARANTINE_TEXT_MAX]}…[{cut} more characters]"
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:  # lone surrogates: Redis could not store it
                text = text.encode("utf-8", "replace").decode()
        out.quarantine.append((text, reason))

    def _ours(self, token: Any) -> TypeGuard[str]:
        """True for a subscribed token; a valid foreign one is counted; a bad one raises."""
        if token.__class__ is str and token in self.tokens:
            return True
        _token(token)
        self.counts["filtered.foreign_token"] += 1
        return False

    # --- token events ---------------------------------------------------------------------
    def _book(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"market":"0xa4c1…","asset_id":"7043…","timestamp":"1791201600123","hash":"d440…",
        "bids":[{"price":"0.45","size":"1200"},{"price":"0.46","size":"850"}],
        "asks":[{"price":"0.52","size":"900"},{"price":"0.49","size":"275.25"}],
        "tick_size":"0.01","event_type":"book","last_trade_price":"0.480"}`"""
        token = m.get("asset_id")
        if not self._ours(token):
            return
        out.events.append(
            Book(
                asset_id=token,
                market=_text(m, "market"),
                ts=_ts(m),
                bids=_levels(_book_levels(m, "bids"), "bids", descending=True),
                asks=_levels(_book_levels(m, "asks"), "asks", descending=False),
                hash=_text(m, "hash"),
                source="ws",
                tick_size=_opt_num(m.get("tick_size"), "tick_size", _tick),
                last_trade_price=_opt_num(m.get("last_trade_price"), "last_trade_price", _top),
            )
        )
        self.counts["event.book"] += 1

    def _price_change(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"market":"0xa4c1…","price_changes":[{"asset_id":"7043…","price":"0.48",
        "size":"150","side":"BUY","hash":"7328…","best_bid":"0.48","best_ask":"0.49"},
        {"asset_id":"9536…","price":"0.52","size":"150","side":"SELL","hash":"8156…",
        "best_bid":"0.51","best_ask":"0.52"}],"timestamp":"1791201601406",
        "event_type":"price_change"}`"""
        changes = m.get("price_changes")
        if changes is None:
            self._legacy_price_change(m, out)
            return
        if changes.__class__ is not list:
            raise _Skip("bad_field:price_changes")
        ts, events, emitted = _ts(m), out.events, 0
        for change in changes:
            try:
                event = self._change(change, ts)
            except _Skip as skip:  # one bad element must not discard its neighbours
                self._quarantine(change, None, skip.reason, out)
                continue
            if event is not None:
                events.append(event)
                emitted += 1
        if emitted:
            self.counts["event.price_change"] += emitted

    def _change(self, c: Any, ts: str) -> PriceChange | None:
        """One element of `price_changes`; None when it is another token's (filtered)."""
        if c.__class__ is not dict:
            raise _Skip("not_an_object")
        token = c.get("asset_id")
        if not self._ours(token):
            return None
        return PriceChange(
            token,
            ts,
            _side(c),
            _num(c.get("price"), "price", _price),
            _num(c.get("size"), "size", _size),
            _opt_num(c.get("best_bid"), "best_bid", _top),
            _opt_num(c.get("best_ask"), "best_ask", _top),
            _text(c, "hash"),
        )

    def _legacy_price_change(self, m: dict[str, Any], out: Normalized) -> None:
        """Before 2025-09-15: `{"asset_id":"7043…","changes":[{"price":"0.48","side":"BUY",
        "size":"150"}],"event_type":"price_change","market":"0xa4c1…",
        "timestamp":"1757894400000","hash":"6622…"}`; some 2024 frames had `price`/`side`/
        `size` flat at top level. No tops were sent: best_bid/best_ask stay ""."""
        if not self._ours(m.get("asset_id")):
            return
        changes = m.get("changes")
        if changes is None:
            if "price" not in m:
                raise _Skip("missing_field:price_changes")
            changes = [m]
        elif changes.__class__ is not list:
            raise _Skip("bad_field:changes")
        token, ts, digest = m["asset_id"], _ts(m), _text(m, "hash")
        # all or nothing: the element is the whole legacy object, it is quarantined as one
        events = [self._legacy_change(c, token, ts, digest) for c in changes]
        out.events.extend(events)
        self.counts["event.price_change"] += len(events)

    @staticmethod
    def _legacy_change(c: Any, token: str, ts: str, digest: str) -> PriceChange:
        if c.__class__ is not dict:
            raise _Skip("not_an_object")
        price = _num(c.get("price"), "price", _price)
        size = _num(c.get("size"), "size", _size)
        return PriceChange(token, ts, _side(c), price, size, "", "", digest)

    def _trade(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"market":"0xa4c1…","asset_id":"7043…","price":"0.51","size":"100",
        "fee_rate_bps":"0","side":"BUY","timestamp":"1791201603550",
        "event_type":"last_trade_price","transaction_hash":"0x08f8…"}`"""
        token = m.get("asset_id")
        if not self._ours(token):
            return
        side = _text(m, "side")
        if side and side not in _TAKER_SIDES:
            raise _Skip("bad_side")
        out.events.append(
            Trade(
                token,
                _ts(m),
                _num(m.get("price"), "price", _price),
                _num(m.get("size"), "size", _size),
                side,
                _opt_num(m.get("fee_rate_bps"), "fee_rate_bps", validate.fee_bps),
                _text(m, "transaction_hash"),
            )
        )
        self.counts["event.trade"] += 1

    def _tick_size_change(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"event_type":"tick_size_change","asset_id":"5396…","market":"0x2aab…",
        "old_tick_size":"0.01","new_tick_size":"0.001","timestamp":"1791201610007"}`"""
        token = m.get("asset_id")
        if not self._ours(token):
            return
        out.events.append(
            TickSizeChange(
                token,
                _ts(m),
                _opt_num(m.get("old_tick_size"), "old_tick_size", _tick),
                _num(m.get("new_tick_size"), "new_tick_size", _tick),
            )
        )
        self.counts["event.tick_size_change"] += 1

    def _best_bid_ask(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"market":"0xa4c1…","asset_id":"7043…","best_bid":"0.48","best_ask":"0.51",
        "spread":"0.03","timestamp":"1791201603561","event_type":"best_bid_ask"}`"""
        token = m.get("asset_id")
        if not self._ours(token):
            return
        out.events.append(
            BestBidAsk(
                token,
                _ts(m),
                _opt_num(m.get("best_bid"), "best_bid", _top),
                _opt_num(m.get("best_ask"), "best_ask", _top),
                _opt_num(m.get("spread"), "spread", validate.spread),
            )
        )
        self.counts["event.best_bid_ask"] += 1

    # --- lifecycle events: global broadcasts, never filtered by token ----------------------
    def _new_market(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"id":"2231457","question":"Will ETH close above $3,200 on October 9?",
        "market":"0xcc3f…","slug":"eth-above-3200-on-october-9","assets_ids":["5256…",
        "3527…"],"outcomes":["Yes","No"],"event_message":{…},"timestamp":"1791201620400",
        "event_type":"new_market","clob_token_ids":[…],"order_price_min_tick_size":"0.01",…}`"""
        outcomes = _list(m, "outcomes")
        if not all(o.__class__ is str and len(o) <= _LABEL for o in outcomes):
            raise _Skip("bad_field:outcomes")
        out.markets.append(
            MarketEvent(
                kind="new_market",
                market=_need_text(m, "market"),
                id=_text(m, "id"),
                asset_ids=tuple(_token(t) for t in _list(m, "assets_ids", "clob_token_ids")),
                ts=_ts(m),
                question=_text(m, "question", _LABEL),
                slug=_text(m, "slug", _LABEL),
                outcomes=tuple(outcomes),
                tick_size=_opt_num(
                    m.get("order_price_min_tick_size"), "order_price_min_tick_size", _tick
                ),
            )
        )
        self.counts["event.new_market"] += 1

    def _market_resolved(self, m: dict[str, Any], out: Normalized) -> None:
        """`{"id":"2231457","market":"0xcc3f…","assets_ids":["5256…","3527…"],
        "winning_asset_id":"5256…","winning_outcome":"Yes","event_message":null,
        "timestamp":"1791736000512","event_type":"market_resolved","tags":["Crypto"]}`
        — live frames may omit question/slug/description."""
        winner = m.get("winning_asset_id")
        out.markets.append(
            MarketEvent(
                kind="market_resolved",
                market=_need_text(m, "market"),
                id=_text(m, "id"),
                asset_ids=tuple(_token(t) for t in _list(m, "assets_ids", "clob_token_ids")),
                ts=_ts(m),
                question=_text(m, "question", _LABEL),
                slug=_text(m, "slug", _LABEL),
                winning_asset_id=_token(winner) if winner else "",
                winning_outcome=_text(m, "winning_outcome", _LABEL),
            )
        )
        self.counts["event.market_resolved"] += 1


def _as_text(raw: object) -> str:
    """A frame as text for quarantine, whatever it is (undecodable bytes get U+FFFD)."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("utf-8", "replace")
    return f"<{type(raw).__name__}>"


def _clip(value: Any, depth: int) -> Any:
    """`value` with whatever is nested deeper than `depth` replaced by a marker string."""
    if value.__class__ is list:
        return [_clip(v, depth - 1) for v in value] if depth else "…[nested deeper]"
    if value.__class__ is dict:
        return {k: _clip(v, depth - 1) for k, v in value.items()} if depth else "…[nested deeper]"
    return value


def _looks_like_book(m: dict[str, Any]) -> bool:
    """An object with a token and both sides is a book even without `event_type`."""
    return "asset_id" in m and ("bids" in m or "buys" in m) and ("asks" in m or "sells" in m)

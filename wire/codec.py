"""The stream codec: events to flat string fields and back (DESIGN.md §2).

Every token stream entry has `type`, `seq`, `epoch`, `ts`, `rx`, `v` (schema version) and the
fields of its type. The publisher's Lua step assigns `seq`, so `encode_body` leaves it out and
`encode` (for tests, replays and tools) puts it in. Bad input raises DecodeError: `decode`
holds every number, timestamp and text field to the rules of `wire/validate.py` (the ones the
normalizer holds the exchange to), so a price of 7 or a size of -5 written into a stream by
anyone is refused, not served; numbers come out canonical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from polybus.wire import validate
from polybus.wire.errors import DecodeError
from polybus.wire.events import (
    BOOK_SOURCES,
    STATUS_STATES,
    BestBidAsk,
    Book,
    Entry,
    Event,
    Level,
    MarketEvent,
    PriceChange,
    Side,
    Status,
    TickSizeChange,
    Trade,
)


__all__ = [
    "PRICE_CHANGE_NAMES",
    "SCHEMA_VERSION",
    "Change",
    "RawFields",
    "decode",
    "decode_change",
    "decode_levels",
    "decode_market",
    "encode",
    "encode_body",
    "encode_items",
    "encode_levels",
    "encode_market",
    "pairs",
    "text_fields",
]

SCHEMA_VERSION = "1"

Fields = dict[str, str]


def encode_levels(levels: tuple[Level, ...]) -> str:
    """JSON `[["0.47","310.5"], …]` of levels, in the order given (best first)."""
    return orjson.dumps(levels).decode()


def decode_levels(text: str) -> tuple[Level, ...]:
    """Levels from their JSON form; DecodeError unless a list of [price, size] strings that
    are a valid price and size (wire/validate.py), which come out canonical."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"levels are not JSON: {text[:80]!r}") from exc
    if not isinstance(raw, list):
        raise DecodeError("levels must be a JSON list")
    out: list[Level] = []
    price, size = validate.price, validate.size
    for item in raw:
        pair = isinstance(item, list) and len(item) == 2
        if not (pair and isinstance(item[0], str) and isinstance(item[1], str)):
            raise DecodeError(f"bad level: a {type(item).__name__}, not [price, size]")
        out.append((price(item[0]), size(item[1])))
    return tuple(out)


Items = tuple[str, ...]
"""Field names and values alternating: ("side", "bid", "price", "0.48", …)."""


def _book_items(e: Book) -> Items:
    items: Items = (
        "market",
        e.market,
        "bids",
        encode_levels(e.bids),
        "asks",
        encode_levels(e.asks),
        "hash",
        e.hash,
        "source",
        e.source,
    )
    if e.tick_size:
        items += ("tick_size", e.tick_size)
    if e.last_trade_price:
        items += ("last_trade_price", e.last_trade_price)
    return items


def _price_change_items(e: PriceChange) -> Items:
    return (
        "side",
        e.side,
        "price",
        e.price,
        "size",
        e.size,
        "best_bid",
        e.best_bid,
        "best_ask",
        e.best_ask,
        "hash",
        e.hash,
    )


def _trade_items(e: Trade) -> Items:
    return (
        "price",
        e.price,
        "size",
        e.size,
        "side",
        e.side,
        "fee_rate_bps",
        e.fee_rate_bps,
        "tx",
        e.tx,
    )


def _tick_items(e: TickSizeChange) -> Items:
    return ("old", e.old, "new", e.new)


def _bba_items(e: BestBidAsk) -> Items:
    return ("best_bid", e.best_bid, "best_ask", e.best_ask, "spread", e.spread)


def _status_items(e: Status) -> Items:
    if e.ttl_ms:  # `retired`: the Lua step expires the token's keys after it
        return ("state", e.state, "reason", e.reason, "ttl_ms", e.ttl_ms)
    return ("state", e.state, "reason", e.reason)


_ITEMS: dict[str, Callable[[Any], Items]] = {
    "book": _book_items,
    "price_change": _price_change_items,
    "trade": _trade_items,
    "tick_size_change": _tick_items,
    "best_bid_ask": _bba_items,
    "status": _status_items,
}


def encode_items(event: Event, *, epoch: int, rx: int) -> Items:
    """The entry's fields without `seq` as one flat tuple, in stream order (the hot path)."""
    return (
        "type",
        event.type,
        "epoch",
        str(epoch),
        "ts",
        event.ts,
        "rx",
        str(rx),
        "v",
        SCHEMA_VERSION,
        *_ITEMS[event.type](event),
    )


PRICE_CHANGE_NAMES: tuple[str, ...] = encode_items(
    PriceChange("0", "0", "bid", "0.5", "1", "", "", ""), epoch=0, rx=0
)[0::2]
"""The names of a price_change entry's items, in order (every one has the same): the
publisher sends these entries' values alone, and publish.lua names them (rendered in)."""


def encode_body(event: Event, *, epoch: int, rx: int) -> Fields:
    """Flat fields of `event` without `seq` (the publisher's atomic step assigns it)."""
    items = encode_items(event, epoch=epoch, rx=rx)
    return dict(zip(items[::2], items[1::2], strict=True))


def encode(entry: Entry) -> Fields:
    """Flat fields of a whole entry, `seq` included, in stream order."""
    body = encode_body(entry.event, epoch=entry.epoch, rx=entry.rx)
    return {"type": body.pop("type"), "seq": str(entry.seq), **body}


def text_fields(fields: Mapping[Any, Any]) -> Fields:
    """Fields as str -> str, whether redis returned bytes or str."""
    try:  # the common case, every name and value bytes (a consumer reads undecoded): fast
        return {k.decode(): v.decode() for k, v in fields.items()}
    except (AttributeError, UnicodeDecodeError):
        pass  # str from a decoding client, or something to refuse with a reason: below
    out: Fields = {}
    try:
        for k, v in fields.items():
            key = k.decode() if isinstance(k, bytes) else k
            val = v.decode() if isinstance(v, bytes) else v
            if not isinstance(key, str) or not isinstance(val, str):
                raise DecodeError(f"field {type(k).__name__} -> {type(v).__name__} is not text")
            out[key] = val
    except UnicodeDecodeError as exc:
        raise DecodeError(f"a field is not UTF-8: {exc.object[:40]!r}") from None
    return out


def _need(f: Fields, name: str) -> str:
    try:
        return f[name]
    except KeyError:
        raise DecodeError(f"{f.get('type', '?')} entry lacks field {name!r}") from None


def _int(f: Fields, name: str) -> int:
    """A non-negative integer of ASCII digits (int() would take `1_000`, ` 5`, `٣`)."""
    text = _need(f, name)
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        raise DecodeError(f"field {name!r} is not an integer: {text[:40]!r}")
    return int(text)


_Rule = Callable[[str], str]


def _num(f: Fields, name: str, rule: _Rule, default: str | None = None) -> str:
    """Field `name` held to `rule` (wire/validate.py); required unless `default` is given."""
    text = _need(f, name) if default is None else f.get(name, default)
    try:
        return rule(text)
    except DecodeError as exc:
        raise DecodeError(f"{f.get('type', '?')} field {name!r}: {exc}") from None


def _text(f: Fields, name: str, default: str = "") -> str:
    """An optional text field of bounded length."""
    try:
        return validate.text(f.get(name, default))
    except DecodeError as exc:
        raise DecodeError(f"{f.get('type', '?')} field {name!r}: {exc}") from None


def _ts(f: Fields) -> str:
    return _num(f, "ts", validate.timestamp, "")


def _decode_book(t: str, f: Fields) -> Event:
    source = f.get("source", "ws")
    if source not in BOOK_SOURCES:
        raise DecodeError(f"book source must be one of {BOOK_SOURCES}, got {source[:20]!r}")
    return Book(
        asset_id=t,
        market=_text(f, "market"),
        ts=_ts(f),
        bids=decode_levels(_need(f, "bids")),
        asks=decode_levels(_need(f, "asks")),
        hash=_text(f, "hash"),
        source=source,
        tick_size=_num(f, "tick_size", _opt_tick, ""),
        last_trade_price=_num(f, "last_trade_price", validate.top, ""),
    )


def _opt_tick(text: str) -> str:
    return text and validate.tick(text)


def _decode_price_change(t: str, f: Fields) -> Event:
    side: Side
    match _need(f, "side"):
        case "bid":
            side = "bid"
        case "ask":
            side = "ask"
        case other:
            raise DecodeError(f"price_change side must be bid or ask, got {other[:20]!r}")
    return PriceChange(
        asset_id=t,
        ts=_ts(f),
        side=side,
        price=_num(f, "price", validate.price),
        size=_num(f, "size", validate.size),
        best_bid=_num(f, "best_bid", validate.top, ""),
        best_ask=_num(f, "best_ask", validate.top, ""),
        hash=_text(f, "hash"),
    )


def _decode_trade(t: str, f: Fields) -> Event:
    side = f.get("side", "")
    if side not in ("", "BUY", "SELL"):
        raise DecodeError(f"trade side must be BUY or SELL, got {side[:20]!r}")
    return Trade(
        asset_id=t,
        ts=_ts(f),
        price=_num(f, "price", validate.price),
        size=_num(f, "size", validate.size),
        side=side,
        fee_rate_bps=_num(f, "fee_rate_bps", validate.fee_bps, ""),
        tx=_text(f, "tx"),
    )


def _decode_tick(t: str, f: Fields) -> Event:
    return TickSizeChange(
        asset_id=t,
        ts=_ts(f),
        old=_num(f, "old", _opt_tick, ""),
        new=_num(f, "new", validate.tick),
    )


def _decode_bba(t: str, f: Fields) -> Event:
    return BestBidAsk(
        asset_id=t,
        ts=_ts(f),
        best_bid=_num(f, "best_bid", validate.top, ""),
        best_ask=_num(f, "best_ask", validate.top, ""),
        spread=_num(f, "spread", validate.spread, ""),
    )


def _decode_status(t: str, f: Fields) -> Event:
    state = _need(f, "state")
    if state not in STATUS_STATES:
        raise DecodeError(f"unknown status state {state[:20]!r}")
    ttl = f.get("ttl_ms", "")
    if ttl and not (ttl.isascii() and ttl.isdigit() and len(ttl) <= 20):
        raise DecodeError(f"bad ttl_ms {ttl[:20]!r}")
    return Status(asset_id=t, state=state, reason=_text(f, "reason"), ts=_ts(f), ttl_ms=ttl)


# --- the hot path: a price_change read undecoded ---------------------------------------------

Change = tuple[int, int, int, str, Side, str, str, str, str, str, str]
"""A price_change entry as decode_change gives it: (seq, epoch, rx, ts, side, price, size,
best_bid, best_ask, hash, writer)."""

RawFields = Mapping[Any, Any] | list[Any]
"""An entry's fields as redis-py gives them (a mapping), or as the server sent them: names
and values alternating in one list."""

_CHANGE_ORDER = [
    *(b"type", b"seq", b"epoch", b"ts", b"rx", b"v"),
    *(b"side", b"price", b"size", b"best_bid", b"best_ask", b"hash"),
]
"""A price_change's field names in the order the feeder's Lua step writes them."""
_CHANGE_NAMES = frozenset((*_CHANGE_ORDER, b"writer"))
_SIDES: dict[bytes, Side] = {b"bid": "bid", b"ask": "ask"}
_RAW_MAX = 65536
_RAW_PRICES: dict[bytes, str] = {}
_RAW_SIZES: dict[bytes, str] = {}
_RAW_TOPS: dict[bytes, str] = {}
_EPOCHS: dict[bytes, int] = {}
"""Epochs met (a feeder's connection generations: a few)."""


def _admit_raw(raw: bytes, cache: dict[bytes, str], rule: _Rule) -> str:
    """`rule` on the text of `raw` (raises as it does, or UnicodeDecodeError), now cached."""
    out = rule(raw.decode())
    if len(cache) >= _RAW_MAX:
        cache.clear()
    cache[raw] = out
    return out


def pairs(flat: list[Any]) -> dict[Any, Any]:
    """A flat [name, value, …] list as a dict, as redis-py makes it (a last odd item is
    dropped)."""
    it = iter(flat)
    return dict(zip(it, it, strict=False))


def decode_change(fields: RawFields) -> Change | None:
    """The entry nearly every read is — a `price_change` with bytes names and values, as a
    consumer reads it — as a tuple holding exactly what `decode` puts in its Entry and
    PriceChange, by the same rules, without building either (their frozen constructors cost
    more than the rest of decoding) or a text copy of the fields. None for any other entry,
    or anything unusual about this one: `decode` then decides, and refuses with a reason.
    Numbers go through caches of the bytes already admitted by wire/validate.py's rules."""
    try:
        writer = b""
        if isinstance(fields, list):
            if fields[0::2] != _CHANGE_ORDER:  # not as the feeder writes it: by name
                return decode_change(pairs(fields))
            kind, seq, epoch, ts, rx, version, side, price, size, bid, ask, hash_ = fields[1::2]
        else:
            if not fields.keys() <= _CHANGE_NAMES:
                return None
            get = fields.get
            kind, seq, epoch, ts, rx = (
                *(fields[b"type"], fields[b"seq"], fields[b"epoch"]),
                *(get(b"ts", b""), fields[b"rx"]),
            )
            version, side, price, size = (
                get(b"v", b"1"),
                fields[b"side"],
                fields[b"price"],
                fields[b"size"],
            )
            bid, ask, hash_, writer = (
                get(b"best_bid", b""),
                get(b"best_ask", b""),
                get(b"hash", b""),
                get(b"writer", b""),
            )
        if kind != b"price_change" or version != b"1":
            return None
        if not (
            0 < len(seq) <= 19  # `_int`'s rule: 1 to 19 ASCII digits
            and 0 < len(epoch) <= 19
            and 0 < len(rx) <= 19
            and len(ts) <= validate.TS_DIGITS
            and len(hash_) <= validate.ID_MAX  # bytes, not characters: decode counts those
            and len(writer) <= validate.ID_MAX
        ):
            return None
        # bytes.isdigit is ASCII only (and a str raises); ts may be empty
        if not bytes.isdigit(seq + epoch + rx) or (ts and not bytes.isdigit(ts)):
            return None
        return (
            *(int(seq), _epoch(epoch), int(rx), ts.decode(), _SIDES[side]),
            _RAW_PRICES.get(price) or _admit_raw(price, _RAW_PRICES, validate.price),
            _RAW_SIZES.get(size) or _admit_raw(size, _RAW_SIZES, validate.size),
            _top(bid),
            _top(ask),
            hash_.decode(),
            writer.decode() if writer else "",
        )
    except Exception:  # not bytes, not UTF-8, a field missing or refused: decode's to judge
        return None


def _top(raw: bytes) -> str:
    out = _RAW_TOPS.get(raw)
    return _admit_raw(raw, _RAW_TOPS, validate.top) if out is None else out


def _epoch(raw: bytes) -> int:
    out = _EPOCHS.get(raw)
    if out is None:
        if len(_EPOCHS) >= 1024:  # anyone may write a stream: keep it bounded
            _EPOCHS.clear()
        out = _EPOCHS[raw] = int(raw)
    return out


_DECODE: dict[str, Callable[[str, Fields], Event]] = {
    "book": _decode_book,
    "price_change": _decode_price_change,
    "trade": _decode_trade,
    "tick_size_change": _decode_tick,
    "best_bid_ask": _decode_bba,
    "status": _decode_status,
}


def decode(fields: Mapping[Any, Any], token: str, entry_id: str | bytes = "") -> Entry:
    """The Entry a token stream entry holds; `token` comes from the stream's key."""
    change = decode_change(fields)
    if change is None:
        return _decode_fields(fields, token, entry_id)
    seq, epoch, rx, ts, side, price, size, best_bid, best_ask, hash_, writer = change
    return Entry(
        event=PriceChange(token, ts, side, price, size, best_bid, best_ask, hash_),
        seq=seq,
        epoch=epoch,
        rx=rx,
        id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        writer=writer,
    )


def _decode_fields(fields: Mapping[Any, Any], token: str, entry_id: str | bytes = "") -> Entry:
    """decode, the whole way: every type, every field checked, a reason for each refusal."""
    f = text_fields(fields)
    version = f.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise DecodeError(f"unsupported schema version {version[:10]!r}")
    kind = _need(f, "type")
    try:
        build = _DECODE[kind]
    except KeyError:
        raise DecodeError(f"unknown entry type {kind[:40]!r}") from None
    event = build(token, f)
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Entry(
        event=event,
        seq=_int(f, "seq"),
        epoch=_int(f, "epoch"),
        rx=_int(f, "rx"),
        id=eid,
        writer=_text(f, "writer"),
    )


def encode_market(e: MarketEvent, *, rx: int) -> Fields:
    """Flat fields of a lifecycle event for the markets stream."""
    return {
        "type": e.kind,
        "ts": e.ts,
        "rx": str(rx),
        "v": SCHEMA_VERSION,
        "market": e.market,
        "id": e.id,
        "asset_ids": orjson.dumps(e.asset_ids).decode(),
        "question": e.question,
        "slug": e.slug,
        "outcomes": orjson.dumps(e.outcomes).decode(),
        "winning_asset_id": e.winning_asset_id,
        "winning_outcome": e.winning_outcome,
        "tick_size": e.tick_size,
    }


def _str_tuple(text: str, name: str) -> tuple[str, ...]:
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{name} is not JSON") from exc
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise DecodeError(f"{name} must be a JSON list of strings")
    return tuple(raw)


def decode_market(fields: Mapping[Any, Any]) -> MarketEvent:
    """The MarketEvent a markets stream entry holds."""
    f = text_fields(fields)
    kind = _need(f, "type")
    if kind not in ("new_market", "market_resolved"):
        raise DecodeError(f"unknown lifecycle type {kind[:40]!r}")
    event = MarketEvent(
        kind=kind,  # type: ignore[arg-type]
        market=_need(f, "market"),
        id=f.get("id", ""),
        asset_ids=_str_tuple(f.get("asset_ids", "[]"), "asset_ids"),
        ts=f.get("ts", ""),
        question=f.get("question", ""),
        slug=f.get("slug", ""),
        outcomes=_str_tuple(f.get("outcomes", "[]"), "outcomes"),
        winning_asset_id=f.get("winning_asset_id", ""),
        winning_outcome=f.get("winning_outcome", ""),
        tick_size=f.get("tick_size", ""),
    )
    validate.check_market(event)  # InvalidToken is a DecodeError too
    return event

"""The hash codec: the book hash `P:book:{T}` and the feeder health hash `P:feeder:<id>`.
Pure; beside the stream codec (codec.py), with every field name of both layouts here and
nowhere else (key names: keys.py; the Lua step writes the book hash's fields itself and
tests/feeder/test_publisher.py pins them).

Two ways to read a book hash, because two kinds of reader need them:
- `decode_book` (the consumer library): strict. DecodeError for anything it cannot serve —
  a field that is not UTF-8, a `seq`/`last_id` that is not one, a `status` outside
  BOOK_STATUSES, a level or last trade that wire's stream codec refuses (the same rules as
  the `book`/`trade` entries they were folded from). Never half a result.
- `read_book` (tools: `polybus book`, `top`, the demo, recorders): lenient. It shows what is
  there and never raises: text that is not UTF-8 is replaced, a level or top whose price is
  not a number is left out, a `seq` that is not one reads as unknown.

The health hash is written by one feeder and read by tools and consumers: `decode_health`
is lenient (a garbage number reads as its default, garbage `connections` as none), since a
loop that reads it must never die of someone else's key.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields as dataclass_fields
from decimal import Decimal
from typing import Any

import orjson

from polybus.wire.codec import decode, text_fields
from polybus.wire.errors import DecodeError
from polybus.wire.events import BOOK_STATUSES, Book, Level, Trade


__all__ = [
    "ASK",
    "BID",
    "SUMMARY_FIELDS",
    "BookField",
    "BookHash",
    "ConnectionHealth",
    "FeederHealth",
    "HealthField",
    "book_meta",
    "decode_book",
    "decode_health",
    "decode_partition_set",
    "decode_run",
    "decode_seq",
    "encode_health",
    "encode_partition_set",
    "health_report",
    "read_book",
    "replay_start",
]

BID, ASK = "bid:", "ask:"
"""Prefixes of the level fields: `bid:<price>` / `ask:<price>` -> size."""


class BookField:
    """The book hash's fields other than levels (DESIGN.md §2, fixed; docs/wire.md)."""

    ASSET_ID = "asset_id"
    MARKET = "market"
    TICK_SIZE = "tick_size"
    HASH = "hash"
    TS = "ts"
    BEST_BID = "best_bid"
    BEST_ASK = "best_ask"
    LAST_TRADE_PRICE = "last_trade_price"
    LAST_TRADE_SIZE = "last_trade_size"
    LAST_TRADE_SIDE = "last_trade_side"
    STATUS = "status"
    LAST_ID = "last_id"
    SEQ = "seq"
    EPOCH = "epoch"
    QUESTION = "question"
    OUTCOME = "outcome"
    WRITER = "writer"
    FENCE = "fence"
    """The fencing number of the writer's partition lease (docs/ha.md); only grows."""
    LEASE = "lease"
    """No longer written (per-book leases gave way to partition leases); read for old hashes."""


SUMMARY_FIELDS = (
    BookField.QUESTION,
    BookField.OUTCOME,
    BookField.BEST_BID,
    BookField.BEST_ASK,
    BookField.LAST_TRADE_PRICE,
    BookField.TS,
    BookField.STATUS,
    BookField.SEQ,
    BookField.WRITER,
    BookField.FENCE,
)
"""What a table of many books reads of each (one HMGET, no levels): `read_book` takes them;
`writer` and `fence` say who maintains the book (wire/maintained.py)."""


@dataclass(frozen=True, slots=True)
class BookHash:
    """One book hash, decoded. Text fields are "" when absent; levels best first."""

    asset_id: str = ""
    market: str = ""
    tick_size: str = ""
    hash: str = ""
    ts: str = ""
    best_bid: str = ""
    best_ask: str = ""
    last_trade_price: str = ""
    last_trade_size: str = ""
    last_trade_side: str = ""
    status: str = ""
    """`decode_book`: one of BOOK_STATUSES (pending when absent); `read_book`: as written."""
    last_id: str = ""
    seq: int | None = None
    """None: no `seq` (`read_book`: or not a number)."""
    epoch: str = ""
    question: str = ""
    outcome: str = ""
    writer: str = ""
    fence: str = ""
    lease: str = ""
    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()


_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
_SEQ = re.compile(r"\d{1,20}")
_TEXT = tuple(f.name for f in dataclass_fields(BookHash) if f.name not in ("seq", "bids", "asks"))


def decode_book(token: str, raw: Mapping[Any, Any]) -> BookHash | None:
    """A book hash as HGETALL returned it (bytes or str), checked; None when it is empty.
    DecodeError if anything in it cannot be served."""
    try:
        f = text_fields(raw)  # DecodeError for a field that is not UTF-8 text
    except UnicodeError as exc:
        raise DecodeError(f"book hash of {token}: a field is not UTF-8") from exc
    if not f:
        return None
    status = f.get(BookField.STATUS, "pending")
    if status not in BOOK_STATUSES:
        raise DecodeError(f"book hash of {token}: status {status!r:.20} is not one")
    seq, last_id = f.get(BookField.SEQ), f.get(BookField.LAST_ID)
    if (seq is None) != (last_id is None) or (seq is not None and not _SEQ.fullmatch(seq)):
        raise DecodeError(f"book hash of {token}: seq {seq!r:.24} / last_id {last_id!r:.24}")
    if last_id is not None and not _STREAM_ID.fullmatch(last_id):
        raise DecodeError(f"book hash of {token}: last_id {last_id!r:.40} is not a stream id")
    book, trade = _checked_book(token, f), _checked_trade(token, f)
    text = {name: f.get(name, "") for name in _TEXT}
    return BookHash(
        **{
            **text,
            "tick_size": book.tick_size,
            "hash": book.hash,
            "ts": book.ts,
            "last_trade_price": trade.price if trade else "",
            "last_trade_size": trade.size if trade and f.get(BookField.LAST_TRADE_SIZE) else "",
            "last_trade_side": trade.side if trade else "",
            "status": status,
        },
        seq=None if seq is None else int(seq),
        bids=_best_first(book.bids, descending=True),
        asks=_best_first(book.asks, descending=False),
    )


def _checked_book(token: str, f: dict[str, str]) -> Book:
    """The levels, hash, tick and ts held to the stream codec's rules for a `book` entry."""
    bids = [[k[len(BID) :], v] for k, v in f.items() if k.startswith(BID)]
    asks = [[k[len(ASK) :], v] for k, v in f.items() if k.startswith(ASK)]
    event = decode(
        {
            **_ENVELOPE,
            "ts": f.get(BookField.TS, ""),
            "type": "book",
            "bids": orjson.dumps(bids).decode(),
            "asks": orjson.dumps(asks).decode(),
            "hash": f.get(BookField.HASH, ""),
            "tick_size": f.get(BookField.TICK_SIZE, ""),
        },
        token,
    ).event
    assert isinstance(event, Book)
    return event


def _checked_trade(token: str, f: dict[str, str]) -> Trade | None:
    """The last trade held to the stream codec's rules for a `trade` entry (None: none)."""
    if not f.get(BookField.LAST_TRADE_PRICE):
        return None
    event = decode(
        {
            **_ENVELOPE,
            "ts": f.get(BookField.TS, ""),
            "type": "trade",
            "price": f[BookField.LAST_TRADE_PRICE],
            "size": f.get(BookField.LAST_TRADE_SIZE) or "0",
            "side": f.get(BookField.LAST_TRADE_SIDE, ""),
        },
        token,
    ).event
    assert isinstance(event, Trade)
    return event


_ENVELOPE = {"seq": "0", "epoch": "0", "rx": "0"}


def _best_first(levels: tuple[Level, ...], *, descending: bool) -> tuple[Level, ...]:
    return tuple(sorted(levels, key=lambda lv: Decimal(lv[0]), reverse=descending))


def read_book(raw: Mapping[Any, Any]) -> BookHash:
    """Whatever a book hash (or some of its fields: None values count as absent) holds, for
    people to look at. Never raises; see the module docstring."""
    f = {_lenient(k): _lenient(v) for k, v in raw.items() if v is not None}
    seq = f.get(BookField.SEQ, "")
    text = {name: f.get(name, "") for name in _TEXT}
    for name in (BookField.BEST_BID, BookField.BEST_ASK, BookField.LAST_TRADE_PRICE):
        if _number(text[name]) is None:
            text[name] = ""
    return BookHash(
        **text,
        seq=int(seq) if _SEQ.fullmatch(seq) else None,
        bids=_lenient_levels(f, BID, descending=True),
        asks=_lenient_levels(f, ASK, descending=False),
    )


def _lenient(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _number(text: str) -> Decimal | None:
    """A finite Decimal, or None (garbage in a hash must not crash the tool)."""
    with contextlib.suppress(ArithmeticError, ValueError):
        value = Decimal(text)
        if value.is_finite():
            return value
    return None


def _lenient_levels(f: dict[str, str], side: str, *, descending: bool) -> tuple[Level, ...]:
    """One side's levels whose price is a number, best first; sizes as written."""
    out = []
    for key, size in f.items():
        if key.startswith(side):
            price = _number(key[len(side) :])
            if price is not None:
                out.append((price, key[len(side) :], size))
    out.sort(key=lambda lv: lv[0], reverse=descending)
    return tuple((p, s) for _, p, s in out)


def decode_seq(value: Any) -> int | None:
    """A book hash's `seq` as HGET returned it (None: absent); DecodeError if not a number."""
    if value is None:
        return None
    try:
        text = value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeError as exc:
        raise DecodeError("seq is not UTF-8") from exc
    if not (text.isascii() and text.isdigit()):
        raise DecodeError(f"seq {text!r:.24} is not a number")
    return int(text)


def book_meta(*, question: str = "", outcome: str = "") -> dict[str, str]:
    """The fields that say what a token is, for people (not stream state); empty ones left
    out so they never erase what another writer put there."""
    meta = {BookField.QUESTION: question, BookField.OUTCOME: outcome}
    return {k: v for k, v in meta.items() if v}


def replay_start(fields: Mapping[str, str]) -> dict[str, str]:
    """A recorded book hash as the start of its replayed stream: `seq` kept (the Lua step
    numbers the replayed entries as recorded), `last_id` `0-0` (the new stream holds none of
    the entries folded in), and no `writer`/`fence`/`lease` (the recorded feeder does not write
    here). Every other field as recorded."""
    out = {str(k): str(v) for k, v in fields.items()}
    if BookField.LAST_ID in out:
        out[BookField.LAST_ID] = "0-0"
    for bookkeeping in (BookField.WRITER, BookField.FENCE, BookField.LEASE):
        out.pop(bookkeeping, None)
    return out


# --- the feeder health hash ---------------------------------------------------------------


class HealthField:
    """The feeder health hash's fields (docs/operations.md)."""

    STATE = "state"
    REDIS = "redis"
    REDIS_ERROR = "redis_error"
    VERSION = "version"
    PID = "pid"
    STARTED = "started"
    TOKENS = "tokens"
    SYNCED = "synced"
    CONNECTIONS = "connections"
    LAST_FRAME_AGE_MS = "last_frame_age_ms"
    PUBLISHED = "published"
    UPDATED_MS = "updated_ms"
    INTERVAL_MS = "interval_ms"
    WS_URL = "ws_url"
    PARTITIONS = "partitions"
    LEASE_MS = "lease_ms"
    LED = "led"
    CARRYING = "carrying"
    WARM = "warm"


@dataclass(frozen=True, slots=True)
class ConnectionHealth:
    """One upstream connection as the health hash's `connections` JSON lists it."""

    id: int = 0
    state: str = ""
    """A ConnectionState value; `subscribed` when healthy."""
    epoch: int = 0
    tokens: int = 0
    silence_s: float = 0.0
    reconnects: int = 0
    resubscribes: int = 0
    last_reason: str = ""


DEFAULT_INTERVAL_MS = 2000


@dataclass(frozen=True, slots=True)
class FeederHealth:
    """One feeder's health hash, decoded."""

    state: str = ""
    """`ok` (Redis writable, every connection subscribed) or `degraded`."""
    redis: str = ""
    """`ok`, `lost` or `refused`."""
    redis_error: str = ""
    version: str = ""
    pid: int = 0
    started: str = ""
    """The run: ms since the Unix epoch when the process started."""
    tokens: int = 0
    synced: int = 0
    connections: tuple[ConnectionHealth, ...] = ()
    last_frame_age_ms: int = 0
    published: int = 0
    updated_ms: int = 0
    interval_ms: int = DEFAULT_INTERVAL_MS
    ws_url: str = ""
    partitions: int = 0
    """The partition count it runs with (0: an older feeder, no partitions)."""
    lease_ms: int = 0
    """Its POLYBUS_LEASE_MS."""
    led: frozenset[int] = frozenset()
    """Partitions it leads (holds the lease of): it writes their tokens."""
    carrying: frozenset[int] = frozenset()
    """Partitions whose tokens it subscribes: the led ones and those it stands by for."""
    warm: frozenset[int] = frozenset()
    """Partitions whose tokens it has all synced (a standby ready to take over)."""
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    """Fields this codec does not know (a newer feeder's), kept for reports."""


_INT_FIELDS = {
    "pid",
    "tokens",
    "synced",
    "last_frame_age_ms",
    "published",
    "updated_ms",
    "interval_ms",
    "partitions",
    "lease_ms",
}
_SET_FIELDS = {"led", "carrying", "warm"}
_HEALTH_NAMES = tuple(f.name for f in dataclass_fields(FeederHealth) if f.name != "extra")


def encode_health(h: FeederHealth) -> dict[str, str]:
    """The health hash's fields, all text, in the order of FeederHealth."""
    out: dict[str, str] = {}
    for name in _HEALTH_NAMES:
        value = getattr(h, name)
        if name == HealthField.CONNECTIONS:
            out[name] = orjson.dumps([asdict(c) for c in value]).decode()
        elif name in _SET_FIELDS:
            out[name] = encode_partition_set(value)
        else:
            out[name] = str(value)
    return out


def health_report(h: FeederHealth) -> dict[str, Any]:
    """The health hash as `polybus health --json` shows it: its fields as text, unknown
    ones too, `connections` as a list of objects."""
    return {**encode_health(h), **h.extra, "connections": [asdict(c) for c in h.connections]}


def decode_health(raw: Mapping[Any, Any]) -> FeederHealth:
    """A health hash as HGETALL returned it; never raises (see the module docstring)."""
    f = {_lenient(k): _lenient(v) for k, v in raw.items() if v is not None}
    values: dict[str, Any] = {}
    for name in _HEALTH_NAMES:
        if name not in f:
            continue
        if name in _INT_FIELDS:
            text = f[name]
            if text.isascii() and text.isdigit():
                values[name] = int(text)
        elif name == HealthField.CONNECTIONS:
            values[name] = _connections(f[name])
        elif name in _SET_FIELDS:
            values[name] = decode_partition_set(f[name])
        else:
            values[name] = f[name]
    extra = {k: v for k, v in f.items() if k not in _HEALTH_NAMES}
    return FeederHealth(**values, extra=extra)


_CONN_TYPES = {c.name: c.type for c in dataclass_fields(ConnectionHealth)}


def _connections(text: str) -> tuple[ConnectionHealth, ...]:
    """The `connections` JSON list; garbage reads as none, a garbage value as its default."""
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(items, list):
        return ()
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        values: dict[str, Any] = {}
        for name, kind in _CONN_TYPES.items():
            value = item.get(name)
            if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
                values[name] = value
            elif kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)
            elif kind == "str" and isinstance(value, str):
                values[name] = value
        out.append(ConnectionHealth(**values))
    return tuple(out)


def encode_partition_set(partitions: frozenset[int]) -> str:
    """`led`/`carrying`/`warm` as the health hash holds them: "0,3,7" ("" for none)."""
    return ",".join(str(p) for p in sorted(partitions))


def decode_partition_set(value: Any) -> frozenset[int]:
    """A "0,3,7" field as HGET returned it; items that are not partition numbers are left
    out, garbage reads as none."""
    text = _lenient(value) if isinstance(value, str | bytes) else ""
    return frozenset(int(x) for x in text.split(",") if x.isascii() and x.isdigit() and len(x) <= 8)


def decode_run(value: Any) -> str:
    """A health hash's `started` (the feeder's run) as HGET returned it; "" when absent or
    not text."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeError:
            return ""
    return value if isinstance(value, str) else ""

"""Raw recording lines → the events the feeder would have published. Pure, synchronous.

Drives the feeder's own pieces — one `Normalizer` per recorded connection session, one shared
`Mirror` — and hands what they produce to a sink (the feeder's `Outbox` for Redis replays, a
list for plots). What the feeder itself adds around them — `status` entries, which connection
publishes a token, REST snapshots — comes from the same `Subscriptions` machine the live
connection runs, driven by the recorded inputs: `open` and the `type: market` frame (tx) open
a session, a dynamic `subscribe` of new tokens adds them, and the machine's other inputs are
recorded as lines of their own (`resync`, `remove`, `adopt`, `release`, `claim`, `rest`,
`close`), so a replay writes exactly the statuses the live feeder wrote.

Recordings made before those lines existed (their `open` has no `machine` field) are read as
the feeder of that time wrote them: an `unsubscribe` (tx) meant a resync, `status suspect`
with reason `bbo_mismatch` when the mirror flagged the token during the replay, else `resync`.

`snapshot_frame()` gives the cut `--serve --from` uses: the lines before it are folded
silently, then one exchange-style snapshot frame of every synced book stands for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from polybus.feeder.mirror import Mirror
from polybus.feeder.normalize import Normalizer
from polybus.feeder.rest import parse_books
from polybus.feeder.subscriptions import Actions, Subscriptions
from polybus.wire.errors import InvalidToken
from polybus.wire.events import Book, Event, MarketEvent, Status, Trade


__all__ = ["ListSink", "OutboxSink", "RawFolder", "Sink"]

_MACHINE = frozenset(("resync", "remove", "adopt", "release", "claim"))
_NO_DEADLINE = float("inf")
"""A replay follows the recorded decisions; the machine's own deadlines never fire."""


def _follow(normalizer: Normalizer, tokens: list[str]) -> None:
    """The normalizer accepts exactly the subscribed tokens."""
    want = set(tokens)
    gone = normalizer.tokens - want
    if gone:
        normalizer.unsubscribe(gone)
    new = want - normalizer.tokens
    if new:
        normalizer.subscribe(new)


class Sink(Protocol):
    """Where folded output goes."""

    def events(self, events: list[Event], epoch: int, rx: int) -> None: ...
    def quarantine(self, raw: str, reason: str, rx: int) -> None: ...
    def market(self, event: MarketEvent, rx: int) -> None: ...


class OutboxSink:
    """Into the feeder's Outbox (which batches for the Publisher and dedupes lifecycle)."""

    def __init__(self, outbox: Any) -> None:
        self.outbox = outbox

    def events(self, events: list[Event], epoch: int, rx: int) -> None:
        self.outbox.put_nowait(events, epoch, rx)

    def quarantine(self, raw: str, reason: str, rx: int) -> None:
        self.outbox.quarantine(raw, reason, rx)

    def market(self, event: MarketEvent, rx: int) -> None:
        self.outbox.market(event, rx)


@dataclass
class ListSink:
    """Collects (rx, epoch, event) in order: for plots and tests."""

    items: list[tuple[int, int, Event]] = field(default_factory=list)

    def events(self, events: list[Event], epoch: int, rx: int) -> None:
        self.items.extend((rx, epoch, e) for e in events)

    def quarantine(self, raw: str, reason: str, rx: int) -> None:
        pass

    def market(self, event: MarketEvent, rx: int) -> None:
        pass


@dataclass
class _Conn:
    """One recorded connection id across its sessions."""

    epoch: int = 0
    subs: Subscriptions | None = None
    adopting: list[str] = field(default_factory=list)
    """Tokens recorded as adopted before the first session opened."""
    moved: bool = False
    normalizer: Normalizer = field(default_factory=Normalizer)
    open: bool = False
    explicit: bool = False
    """The recording has the machine's inputs as lines (else: the older tx inference)."""


class RawFolder:
    """Feeds raw recording lines through the normalizer, mirror and subscription machine."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.mirror = Mirror()
        self.conns: dict[int, _Conn] = {}
        self.flagged: dict[str, str] = {}
        """token -> why the mirror distrusts it (a check failed) until its next unsubscribe."""
        self.last_trade: dict[str, str] = {}
        self.frames = 0

    def feed(self, line: dict[str, Any]) -> None:
        """Fold one recording line."""
        kind = line.get("kind")
        conn = self.conns.setdefault(int(line.get("conn", 0)), _Conn())
        t = int(line.get("t", 0))
        if kind == "rx":
            self._rx(conn, str(line.get("frame", "")), t)
        elif kind == "tx":
            self._tx(conn, str(line.get("frame", "")), t)
        elif kind == "open":
            conn.epoch = int(line.get("epoch", conn.epoch + 1))
            conn.explicit = conn.explicit or bool(line.get("machine"))
            conn.open = True
        elif kind == "close":
            self._close(conn, str(line.get("reason", "closed")), t)
        elif kind in _MACHINE:
            tokens = [str(x) for x in line.get("tokens", ()) if isinstance(x, str)]
            self._machine(conn, str(kind), tokens, line, t)
        elif kind == "rest":
            self._rest(conn, str(line.get("frame", "")), t)

    def _emit(self, conn: _Conn, actions: Actions, t: int) -> None:
        if actions.statuses:
            self.sink.events(list[Event](actions.statuses), conn.epoch, t)
        if conn.subs is not None:
            _follow(conn.normalizer, conn.subs.tokens)

    def _rx(self, conn: _Conn, frame: str, t: int) -> None:
        self.frames += 1
        out = conn.normalizer.feed(frame, t)
        if out.events:
            events = out.events
            if conn.subs is not None and (conn.subs.adopting or conn.subs.waiting):
                events = self._books_seen(conn, events, t)
            events, bad = self.mirror.apply(events, t / 1e6)
            self._fold(events, conn.epoch, t)
            for token in bad:
                self.flagged[token] = "bbo_mismatch"
        for text, reason in out.quarantine:
            self.sink.quarantine(text, reason, t)
        for market in out.markets:
            self.sink.market(market, t)

    def _books_seen(self, conn: _Conn, events: list[Event], t: int) -> list[Event]:
        """As the live connection: books end waits, an adopted token counts from its book."""
        subs, kept = conn.subs, []
        assert subs is not None
        for event in events:
            if isinstance(event, Book):
                self._emit(conn, subs.book_seen(event.asset_id, t / 1e6), t)
            elif event.asset_id in subs.adopting:
                continue
            kept.append(event)
        return kept

    def _fold(self, events: list[Event], epoch: int, t: int) -> None:
        for event in events:
            if isinstance(event, Trade):
                self.last_trade[event.asset_id] = event.price
            elif isinstance(event, Book) and event.last_trade_price:
                self.last_trade[event.asset_id] = event.last_trade_price
        self.sink.events(events, epoch, t)

    def _tx(self, conn: _Conn, frame: str, t: int) -> None:
        if not frame.startswith("{"):
            return  # PING
        try:
            msg = orjson.loads(frame)
            tokens = [str(x) for x in msg.get("assets_ids", [])]
            operation = msg.get("operation")
            if operation is None and msg.get("type") == "market":
                self._subscribed(conn, tokens, t)
            elif operation == "subscribe":
                self._added(conn, tokens, t)
            elif operation == "unsubscribe" and not conn.explicit:
                self._legacy_resync(conn, tokens, t)
        except (orjson.JSONDecodeError, AttributeError, InvalidToken):
            return  # not a frame the feeder writes; the exchange would ignore it too

    def _subscribed(self, conn: _Conn, tokens: list[str], t: int) -> None:
        if conn.subs is None:
            owned = [tok for tok in dict.fromkeys(tokens) if tok not in conn.adopting]
            conn.subs = Subscriptions(
                owned, snapshot_timeout=_NO_DEADLINE, adopting=conn.adopting, moved=conn.moved
            )
        conn.normalizer = Normalizer()
        self._emit(conn, conn.subs.opened(t / 1e6, conn.epoch), t)

    def _added(self, conn: _Conn, tokens: list[str], t: int) -> None:
        if conn.subs is not None:
            self._emit(conn, conn.subs.add(tokens, t / 1e6), t)

    def _machine(
        self, conn: _Conn, kind: str, tokens: list[str], line: dict[str, Any], t: int
    ) -> None:
        """A recorded input of the live machine (see feeder/connection.py `_record`)."""
        conn.explicit = True
        subs, now = conn.subs, t / 1e6
        if subs is None:  # before the first session: only adoptions are recorded this early
            if kind == "adopt":
                conn.adopting += tokens
                conn.moved = conn.moved or bool(line.get("moved"))
            return
        if kind == "resync":
            self.mirror.unsync([tok for tok in tokens if tok in subs.owned])
            self._emit(conn, subs.resync(tokens, str(line.get("reason", "")), now), t)
        elif kind == "remove":
            self.mirror.unsync([tok for tok in tokens if tok in subs.owned])
            self._emit(
                conn,
                subs.remove(
                    tokens,
                    str(line.get("reason", "")),
                    str(line.get("state", "retired")),
                    str(line.get("ttl_ms", "")),
                ),
                t,
            )
        elif kind == "adopt":
            self._emit(conn, subs.adopt(tokens, now, moved=bool(line.get("moved"))), t)
        elif kind == "release":
            self._emit(conn, subs.release(tokens), t)
        elif kind == "claim":
            self._emit(conn, subs.claim(tokens, now), t)

    def _rest(self, conn: _Conn, frame: str, t: int) -> None:
        """A recorded REST answer (the ladder's rung 2), folded as the live connection did."""
        if conn.subs is None:
            return
        books, bad = parse_books(frame, conn.subs.tokens, t)
        for text, reason in bad:
            self.sink.quarantine(text, reason, t)
        fresh: list[Event] = []
        for book in books:
            if not self.mirror.older(book.asset_id, book.ts):
                self._emit(conn, conn.subs.book_seen(book.asset_id, t / 1e6, "rest"), t)
                fresh.append(book)
        events, _ = self.mirror.apply(fresh, t / 1e6)
        self._fold(events, conn.epoch, t)

    def _legacy_resync(self, conn: _Conn, tokens: list[str], t: int) -> None:
        mine = [tok for tok in dict.fromkeys(tokens) if tok in conn.normalizer.tokens]
        if mine:
            self.mirror.unsync(mine)
            self.sink.events(
                [Status(tok, "suspect", self.flagged.pop(tok, "resync")) for tok in mine],
                conn.epoch,
                t,
            )

    def _close(self, conn: _Conn, reason: str, t: int) -> None:
        if not conn.open or conn.subs is None:
            return
        conn.open = False
        self.mirror.unsync(list(conn.subs.owned))
        self._emit(conn, conn.subs.closed(reason), t)

    # --- the --serve --from cut -----------------------------------------------------------
    def snapshot_frame(self) -> str:
        """The exchange-style array of `book` objects for every synced token (--serve cut)."""
        books = []
        for token in sorted(self.mirror.synced):
            book = self.mirror.book(token)
            books.append(
                {
                    "market": book.market,
                    "asset_id": token,
                    "timestamp": book.ts,
                    "hash": book.hash,
                    "bids": [{"price": p, "size": s} for p, s in reversed(book.bids)],
                    "asks": [{"price": p, "size": s} for p, s in reversed(book.asks)],
                    "tick_size": book.tick_size,
                    "last_trade_price": self.last_trade.get(token, ""),
                    "event_type": "book",
                }
            )
        return orjson.dumps(books).decode()

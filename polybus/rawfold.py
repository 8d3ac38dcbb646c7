"""Raw recording lines → the events the feeder would have published. Pure, synchronous.

Drives the feeder's own pieces — one `Normalizer` per recorded connection session, one shared
`Mirror` — and hands what they produce to a sink (the feeder's `Outbox` for Redis replays, a
list for plots). What the feeder itself adds around them is reproduced from the recorded
connection events, as feeder/connection.py writes it:

- `open` sets the connection's epoch; its `type: market` subscribe frame (tx) starts a fresh
  normalizer on the frame's tokens and writes `status` `connected` (the connection's first
  session) or `resubscribed`, reason `epoch N`.
- `operation: subscribe` (tx) of new tokens: `status connected`, reason `subscribe`. Repeated
  tokens (snapshot retries, the second half of a resync) change nothing.
- `operation: unsubscribe` (tx): the feeder sends it to resync (or to drop a leased token);
  the token turns `status suspect`, reason `bbo_mismatch` when the mirror flagged it during the
  replay, else `resync`.
- `close`: `status disconnected` with the recorded reason for every token of the connection.

`snapshot_frame()` gives the cut `--serve --from` uses: the lines before it are folded
silently, then one exchange-style snapshot frame of every synced book stands for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from feeder.mirror import Mirror
from feeder.normalize import Normalizer
from wire.errors import InvalidToken
from wire.events import Book, Event, MarketEvent, Status, Trade


__all__ = ["ListSink", "OutboxSink", "RawFolder", "Sink"]


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
    sessions: int = 0
    tokens: list[str] = field(default_factory=list)
    normalizer: Normalizer = field(default_factory=Normalizer)
    open: bool = False


class RawFolder:
    """Feeds raw recording lines through the normalizer and mirror into a sink."""

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
            conn.sessions += 1
            conn.open = True
        elif kind == "close":
            self._close(conn, str(line.get("reason", "closed")), t)

    def _rx(self, conn: _Conn, frame: str, t: int) -> None:
        self.frames += 1
        out = conn.normalizer.feed(frame, t)
        if out.events:
            events, bad = self.mirror.apply(out.events)
            for event in events:
                if isinstance(event, Trade):
                    self.last_trade[event.asset_id] = event.price
                elif isinstance(event, Book) and event.last_trade_price:
                    self.last_trade[event.asset_id] = event.last_trade_price
            self.sink.events(events, conn.epoch, t)
            for token in bad:
                self.flagged[token] = "bbo_mismatch"
        for text, reason in out.quarantine:
            self.sink.quarantine(text, reason, t)
        for market in out.markets:
            self.sink.market(market, t)

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
            elif operation == "unsubscribe":
                self._resync(conn, tokens, t)
        except (orjson.JSONDecodeError, AttributeError, InvalidToken):
            return  # not a frame the feeder writes; the exchange would ignore it too

    def _subscribed(self, conn: _Conn, tokens: list[str], t: int) -> None:
        conn.tokens = list(dict.fromkeys(tokens))
        conn.normalizer = Normalizer(conn.tokens)
        state = "connected" if conn.sessions <= 1 else "resubscribed"
        self.sink.events([Status(tok, state, f"epoch {conn.epoch}") for tok in conn.tokens],
                         conn.epoch, t)

    def _added(self, conn: _Conn, tokens: list[str], t: int) -> None:
        new = [tok for tok in dict.fromkeys(tokens) if tok not in conn.normalizer.tokens]
        if new:
            conn.normalizer.subscribe(new)
            conn.tokens.extend(new)
            self.sink.events([Status(tok, "connected", "subscribe") for tok in new],
                             conn.epoch, t)

    def _resync(self, conn: _Conn, tokens: list[str], t: int) -> None:
        mine = [tok for tok in dict.fromkeys(tokens) if tok in conn.normalizer.tokens]
        if mine:
            self.mirror.unsync(mine)
            self.sink.events([Status(tok, "suspect", self.flagged.pop(tok, "resync"))
                              for tok in mine], conn.epoch, t)

    def _close(self, conn: _Conn, reason: str, t: int) -> None:
        if not conn.open:
            return
        conn.open = False
        self.mirror.unsync(conn.tokens)
        self.sink.events([Status(tok, "disconnected", reason) for tok in conn.tokens],
                         conn.epoch, t)

    # --- the --serve --from cut -----------------------------------------------------------
    def snapshot_frame(self) -> str:
        """The exchange-style array of `book` objects for every synced token (--serve cut)."""
        books = []
        for token in sorted(self.mirror.synced):
            book = self.mirror.book(token)
            books.append({
                "market": book.market, "asset_id": token, "timestamp": book.ts,
                "hash": book.hash,
                "bids": [{"price": p, "size": s} for p, s in reversed(book.bids)],
                "asks": [{"price": p, "size": s} for p, s in reversed(book.asks)],
                "tick_size": book.tick_size,
                "last_trade_price": self.last_trade.get(token, ""),
                "event_type": "book",
            })
        return orjson.dumps(books).decode()

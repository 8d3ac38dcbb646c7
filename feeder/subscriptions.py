"""What one connection has subscribed, token by token, and what to do about it. Pure.

The exchange acknowledges nothing: a subscribe worked only once that token's `book` arrives.
This machine holds, per token, whether the connection *owns* it (publishes its events) or is
*adopting* it (subscribed to take it over from another connection: a make-before-break
recycle, or a token moved off a socket that lost it), whether it has a snapshot on this
socket, and the first-book deadline of every subscribe. It never does I/O: each input returns
`Actions` — frames to send, `status` entries to publish, tokens to fetch by REST, tokens to
move to a fresh connection, tokens whose ownership this connection just took — which
`Connection` carries out live and `replay.rawfold` replays from a recording.

The resync ladder (PROTOCOL.md §9, "silent per-asset loss"): a token whose `book` has not
arrived `snapshot_timeout` seconds after its subscribe climbs one rung per deadline:

    rung 0  subscribed (initial, dynamic or adoption): wait for the book
    rung 1  unsubscribe + subscribe on the same socket (a resync starts here)
    rung 2  REST `POST /books`: a snapshot now, while the socket still owes one
    rung 3  move the token to a fresh connection (which adopts it); a token that was already
            moved once, or is being adopted, gives up here instead of moving again

A REST snapshot makes the book synced but does not end the ladder: only a book from the
socket proves the socket delivers the token; otherwise the REST book would go stale quietly.

Statuses (DESIGN.md §2, invariant 4): `connected`/`resubscribed` when a socket opens (owned
tokens only: an adopted token is still vouched for by its old connection), `connected` for a
dynamic subscribe, `suspect` for a resync, `disconnected` when the socket drops. Adoption,
release and the ladder's own rungs write nothing: the book is not trusted less than before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from polybus.wire.events import Status


__all__ = ["Actions", "Subscriptions"]

RESUBSCRIBE, REST, MOVE = 1, 2, 3


@dataclass(slots=True)
class Actions:
    """What an input asks the shell to do, in this order."""

    frames: list[str] = field(default_factory=list)
    """Text frames to send on the socket."""
    statuses: list[Status] = field(default_factory=list)
    """`status` entries to publish (in band, on the token's stream)."""
    subscribed: list[str] = field(default_factory=list)
    """Tokens a subscribe was just sent for: their snapshot is awaited, so the shell must not
    drop it as a duplicate of an earlier, identical frame."""
    rest: list[str] = field(default_factory=list)
    """Tokens to fetch by REST now (rung 2)."""
    move: list[str] = field(default_factory=list)
    """Tokens to hand to a fresh connection (rung 3)."""
    adopted: list[str] = field(default_factory=list)
    """Tokens this connection now owns; the connection they came from must release them."""
    gave_up: list[str] = field(default_factory=list)
    """Tokens whose ladder ended without a book from any socket."""


@dataclass(slots=True)
class _Wait:
    rung: int
    deadline: float


def _frame(operation: str, tokens: list[str]) -> str:
    """A dynamic (un)subscribe on a live socket: no `type`, no ack."""
    msg: dict[str, object] = {"operation": operation, "assets_ids": tokens}
    if operation == "subscribe":
        msg["custom_feature_enabled"] = True
    return orjson.dumps(msg).decode()


def _initial(tokens: list[str]) -> str:
    """The first frame on every socket (a PING before it gets the socket closed, 1008)."""
    return orjson.dumps(
        {
            "type": "market",
            "assets_ids": tokens,
            "custom_feature_enabled": True,
            "initial_dump": True,
        }
    ).decode()


class Subscriptions:
    """Per-token subscription state of one connection."""

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        snapshot_timeout: float,
        adopting: Iterable[str] = (),
        moved: bool = False,
    ) -> None:
        self.timeout = snapshot_timeout
        self.owned: dict[str, None] = dict.fromkeys(tokens)
        """Tokens whose events this connection publishes, in subscription order."""
        self.adopting: dict[str, None] = {t: None for t in adopting if t not in self.owned}
        """Subscribed to take over: published only from their first book on."""
        self.final: set[str] = set(self.adopting) if moved else set()
        """Tokens that must not be moved again (they already were)."""
        self.waiting: dict[str, _Wait] = {}
        self.synced: set[str] = set()
        """Tokens with a snapshot since this socket opened."""
        self.open = False
        self.sessions = 0
        self.counts: Counter[str] = Counter()
        """`ladder.resubscribe`, `ladder.rest`, `ladder.move`, `ladder.gave_up`, `adopted`."""

    # --- views ----------------------------------------------------------------------------
    @property
    def tokens(self) -> list[str]:
        """Everything subscribed: owned, then adopting."""
        return [*self.owned, *self.adopting]

    def next_deadline(self) -> float | None:
        """When `due` has something to do next (None: nothing is awaited)."""
        return min((w.deadline for w in self.waiting.values()), default=None)

    # --- the socket -----------------------------------------------------------------------
    def opened(self, now: float, epoch: int) -> Actions:
        """A socket is up: subscribe everything in its first frame; owned tokens say so."""
        self.open, self.sessions = True, self.sessions + 1
        self.synced.clear()
        tokens = self.tokens
        self.waiting = {t: _Wait(0, now + self.timeout) for t in tokens}
        state = "connected" if self.sessions == 1 else "resubscribed"
        return Actions(
            frames=[_initial(tokens)],
            subscribed=tokens,
            statuses=[Status(t, state, f"epoch {epoch}") for t in self.owned],
        )

    def closed(self, reason: str) -> Actions:
        """The socket is gone: every owned book lost its upstream."""
        self.open = False
        self.synced.clear()
        self.waiting.clear()
        return Actions(statuses=[Status(t, "disconnected", reason) for t in self.owned])

    # --- what the feeder asks -------------------------------------------------------------
    def add(self, tokens: list[str], now: float) -> Actions:
        """Carry more tokens (subscribed now if the socket is open, else on the next open)."""
        new = [t for t in dict.fromkeys(tokens) if t not in self.owned and t not in self.adopting]
        self.owned.update(dict.fromkeys(new))
        if not new or not self.open:
            return Actions()
        return self._subscribe(new, now, 0, [Status(t, "connected", "subscribe") for t in new])

    def adopt(self, tokens: list[str], now: float, *, moved: bool = False) -> Actions:
        """Subscribe tokens another connection owns, to take them over at their first book."""
        new = [t for t in dict.fromkeys(tokens) if t not in self.owned and t not in self.adopting]
        self.adopting.update(dict.fromkeys(new))
        if moved:
            self.final.update(new)
        if not new or not self.open:
            return Actions()
        return self._subscribe(new, now, 0, [])

    def remove(
        self, tokens: list[str], reason: str, state: str = "retired", ttl_ms: str = ""
    ) -> Actions:
        """Stop carrying tokens; owned ones get a `status` entry (`state`, `reason`; a
        `retired` book's keys expire `ttl_ms` later)."""
        gone = [t for t in dict.fromkeys(tokens) if t in self.owned or t in self.adopting]
        statuses = [Status(t, state, reason, ttl_ms=ttl_ms) for t in gone if t in self.owned]
        self._forget(gone)
        frames = [_frame("unsubscribe", gone)] if gone and self.open else []
        return Actions(frames=frames, statuses=statuses)

    def release(self, tokens: list[str]) -> Actions:
        """Another connection took these tokens over: stop quietly."""
        gone = [t for t in dict.fromkeys(tokens) if t in self.owned]
        self._forget(gone)
        return Actions(frames=[_frame("unsubscribe", gone)] if gone and self.open else [])

    def claim(self, tokens: list[str], now: float) -> Actions:
        """Own these tokens now, book or not: the connection they were adopted from is gone
        (it wrote `disconnected` for them; the next book here makes them synced)."""
        extra: list[str] = []
        for token in dict.fromkeys(tokens):
            if token in self.adopting:
                del self.adopting[token]
            elif token in self.owned:
                continue
            else:
                extra.append(token)
            self.owned[token] = None
        if extra and self.open:
            return self._subscribe(extra, now, 0, [])
        return Actions()

    def resync(self, tokens: list[str], reason: str, now: float) -> Actions:
        """Distrust owned books and ask for fresh snapshots (the ladder's rung 1)."""
        mine = [t for t in dict.fromkeys(tokens) if t in self.owned]
        if not mine:
            return Actions()
        statuses = [Status(t, "suspect", reason) for t in mine]
        self.synced.difference_update(mine)
        if not self.open:  # the next open subscribes everything anyway
            return Actions(statuses=statuses)
        self.counts["ladder.resubscribe"] += len(mine)
        return self._resubscribe(mine, now, statuses)

    # --- what the exchange says -----------------------------------------------------------
    def book_seen(self, token: str, now: float, source: str = "ws") -> Actions:
        """A snapshot of `token` arrived (from the socket, or by REST)."""
        if token not in self.owned and token not in self.adopting:
            return Actions()
        self.synced.add(token)
        if source == "ws":
            self.waiting.pop(token, None)
        if token in self.adopting:
            return self._take([token], [])
        return Actions()

    def due(self, now: float) -> Actions:
        """Climb the ladder one rung for every token whose deadline has passed."""
        late = [t for t, w in self.waiting.items() if w.deadline <= now]
        if not late:
            return Actions()
        by_rung: dict[int, list[str]] = {}
        for token in late:
            by_rung.setdefault(self.waiting[token].rung + 1, []).append(token)
        out = Actions()
        for rung in sorted(by_rung):
            _merge(out, self._climb(rung, by_rung[rung], now))
        return out

    # --- internals ------------------------------------------------------------------------
    def _climb(self, rung: int, tokens: list[str], now: float) -> Actions:
        if rung == RESUBSCRIBE:
            self.counts["ladder.resubscribe"] += len(tokens)
            return self._resubscribe(tokens, now, [])
        if rung == REST:
            self.counts["ladder.rest"] += len(tokens)
            for token in tokens:
                self.waiting[token] = _Wait(REST, now + self.timeout)
            return Actions(rest=tokens)
        for token in tokens:
            del self.waiting[token]
        movable = [t for t in tokens if t not in self.final and t not in self.adopting]
        stuck = [t for t in tokens if t not in movable]
        self.counts["ladder.move"] += len(movable)
        self.counts["ladder.gave_up"] += len(stuck)
        # An adoption that never got a book still has to end, or its old connection would
        # never close: take the token over, untrusted (unless REST vouched for it meanwhile).
        taken = [t for t in stuck if t in self.adopting]
        out = self._take(
            taken, [Status(t, "suspect", "no_snapshot") for t in taken if t not in self.synced]
        )
        out.move, out.gave_up = movable, stuck
        return out

    def _resubscribe(self, tokens: list[str], now: float, statuses: list[Status]) -> Actions:
        """Rung 1: a plain re-subscribe is answered `NO NEW ASSETS`; unsubscribe first."""
        out = self._subscribe(tokens, now, RESUBSCRIBE, statuses)
        out.frames.insert(0, _frame("unsubscribe", tokens))
        return out

    def _subscribe(
        self, tokens: list[str], now: float, rung: int, statuses: list[Status]
    ) -> Actions:
        for token in tokens:
            self.waiting[token] = _Wait(rung, now + self.timeout)
        return Actions(
            frames=[_frame("subscribe", tokens)], statuses=statuses, subscribed=list(tokens)
        )

    def _take(self, tokens: list[str], statuses: list[Status]) -> Actions:
        for token in tokens:
            del self.adopting[token]
            self.owned[token] = None
        self.counts["adopted"] += len(tokens)
        return Actions(statuses=statuses, adopted=tokens)

    def _forget(self, tokens: list[str]) -> None:
        for token in tokens:
            self.owned.pop(token, None)
            self.adopting.pop(token, None)
            self.waiting.pop(token, None)
            self.synced.discard(token)
            self.final.discard(token)


def _merge(into: Actions, more: Actions) -> None:
    into.frames += more.frames
    into.statuses += more.statuses
    into.subscribed += more.subscribed
    into.rest += more.rest
    into.move += more.move
    into.adopted += more.adopted
    into.gave_up += more.gave_up

"""Fault injection: per-connection flags, and the shaping of a connection's frames by them.

Every fault here is something live clients have reported (PROTOCOL.md §3.8, §5, §9). Shaping
only adds, regroups, reorders within a same-timestamp run, re-spells or withholds frames;
applied in order, the frames a client gets still lead to the true book (except `stall`,
ceilings and `lost`, whose whole point is missing data, and `wrong_top`, whose stated tops
are wrong on purpose while the levels stay true).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from polybus.simulator import frames
from polybus.simulator.frames import Msg
from polybus.simulator.units import fmt_price, parse_price


__all__ = ["Faults", "Shaper", "restate_sweeps", "strip_lost"]

GARBAGE = (
    b'{"market":"0x',
    b"<html>502 Bad Gateway</html>",
    b'[{"event_type":"book",',
    b"\x00\x00",
    b'{"event_type": price_change}',
)
"""Malformed frame texts (truncated JSON, a proxy's error page, bare junk)."""


SHAPING = (
    "legacy",
    "duplicate",
    "ts_regress",
    "crossed",
    "bursts",
    "drop_bba",
    "delay_bba",
    "unknown",
    "malformed",
    "sweeps",
    "wrong_top",
    "stuck_cross",
)
"""The flags that change a connection's frame stream (the rest gate or answer)."""
WRONG_RUNS = 4096
"""How many (market, timestamp) runs `wrong_top` remembers its decision for."""


@dataclass
class Faults:
    """What a connection does wrong. All off by default: a healthy exchange as of 2026-12
    (`NO NEW ASSETS`, 1008 on an early PING: `resnapshot`/`early_ping_ok` turn those off)."""

    stall: bool = False
    """Stop market data (snapshots too) but keep answering PONG: the silent stall."""
    legacy: bool = False
    """Send price changes in the pre-2025-09-15 shape: one object per asset with `changes`."""
    duplicate: bool = False
    """Send some frames twice."""
    ts_regress: bool = False
    """Send some messages with a timestamp a few ms older than the one before."""
    crossed: bool = False
    """Now and then flash a crossed level (a bid at the best ask), fixed by the next frame."""
    bursts: bool = False
    """Group consecutive events into array frames of 2–6 objects."""
    drop_bba: bool = False
    """Lose some `best_bid_ask` messages."""
    delay_bba: bool = False
    """Hold `best_bid_ask` back and send it with the next batch (after newer book events)."""
    unknown: bool = False
    """Add objects of an unknown `event_type`, inside arrays next to valid elements."""
    malformed: bool = False
    """Add frames that are not valid JSON."""
    sweeps: bool = False
    """State sweeps as live does: the resting rest first, then one price_change per removed
    level, every element stating the post-sweep best_bid/best_ask (so the book folded so far
    disagrees with them, even crosses, until the run of that timestamp is complete)."""
    wrong_top: bool = False
    """State a wrong best_bid (one tick off) on every element of some (market, timestamp)
    runs (`odds`): a real, persistent mismatch, not repaired by later frames of the run."""
    stuck_cross: int = 0
    """Send this many crossed flashes (a YES bid at the best ask, one per batch) that are never
    removed: the client's book stays crossed and off the truth until it resyncs."""
    lost: frozenset[str] = field(default_factory=frozenset)
    """Tokens subscribed but never delivered on this connection: no book, no element, no
    trade, whatever the re-subscribes (REST still answers; a new connection is unaffected)."""
    rescue: float = 0.0
    """Chance that re-subscribing a lost token (after unsubscribing it) rescues it here
    (live: 0–55%)."""
    lose_new: bool = False
    """Every token a later `operation: subscribe` adds is lost (the long-lived-socket decay)."""
    resnapshot: bool = False
    """Pre-2026 rule: a subscribe of held assets sends their books again (no NO NEW ASSETS)."""
    early_ping_ok: bool = False
    """Pre-2026 rule: answer a PING sent before the subscription instead of closing 1008."""
    odds: float = 0.2
    """Chance that a probabilistic fault hits a given frame/message."""
    ceiling: int = 500
    """With more assets than this, data stops silently (PONG still answered)."""
    snapshot_ceiling: int = 750
    """With more assets than this, snapshots stop too."""

    def copy(self) -> Faults:
        return replace(self)

    def shaping(self) -> bool:
        """Whether any flag that changes the frame stream is on."""
        return bool(self.lost) or any(getattr(self, name) for name in SHAPING)


class Shaper:
    """Applies one connection's faults to the messages of a batch, with its own randomness."""

    def __init__(self, seed: int) -> None:
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.delayed: list[bytes] = []
        self._wrong: dict[tuple[str, str], bool] = {}

    def shape(
        self,
        faults: Faults,
        items: list[tuple[Msg, bytes]],
        wanted: set[str],
        tick_of: Callable[[str], int] | None = None,
    ) -> list[bytes]:
        """Frame texts for this batch: `items` are (message, its rendered text) in order;
        `tick_of(token)` gives a token's tick in pips (needed by `wrong_top`)."""
        self.faults = faults
        if faults.lost:
            items = strip_lost(items, faults.lost)
        if faults.sweeps:
            items = restate_sweeps(items)
        if faults.wrong_top and tick_of is not None:
            items = [self._wrong_top(msg, text, tick_of) for msg, text in items]
        return self._frame(self._objects(items, wanted))

    def _wrong_top(self, msg: Msg, text: bytes, tick_of: Callable[[str], int]) -> tuple[Msg, bytes]:
        """The message with a best_bid one tick low on every element, for the chosen runs.
        The choice is remembered per (market, timestamp), so a whole run is wrong or right."""
        changes = msg.get("price_changes")
        if changes is None:
            return msg, text
        run = (msg["market"], msg["timestamp"])
        wrong = self._wrong.get(run)
        if wrong is None:
            if len(self._wrong) >= WRONG_RUNS:
                self._wrong.clear()
            wrong = self._wrong[run] = self.rng.random() < self.faults.odds
        if not wrong:
            return msg, text
        restated = [
            {**c, "best_bid": _lower(c["best_bid"], tick_of(c["asset_id"]))} for c in changes
        ]
        out = {**msg, "price_changes": restated}
        return out, frames.render(out)

    def _objects(self, items: list[tuple[Msg, bytes]], wanted: set[str]) -> list[bytes]:
        """Rendered JSON objects in send order, after per-message faults."""
        f, rng = self.faults, self.rng
        out, self.delayed = self.delayed, []
        for msg, text in items:
            kind = msg["event_type"]
            if kind == "best_bid_ask":
                if f.drop_bba and rng.random() < f.odds:
                    continue
                if f.delay_bba:
                    self.delayed.append(text)
                    continue
            if f.legacy and kind == "price_change":
                out += [frames.render(m) for m in frames.legacy_price_changes(msg, wanted)]
            elif f.ts_regress and "timestamp" in msg and rng.random() < f.odds:
                out.append(frames.render(frames.regressed(msg, rng.randrange(1, 40))))
            else:
                out.append(text)
        return out

    def _frame(self, objects: list[bytes]) -> list[bytes]:
        """Group objects into frames, then add duplicates and garbage."""
        f, rng = self.faults, self.rng
        grouped: list[bytes] = []
        group: list[bytes] = []
        want = rng.randrange(2, 7) if f.bursts else 1
        for obj in objects:
            group.append(obj)
            forced = f.unknown and rng.random() < f.odds
            if forced:
                group.append(_UNKNOWN)
            if len(group) < want and not forced:
                continue
            grouped.append(group[0] if len(group) == 1 else b"[" + b",".join(group) + b"]")
            group, want = [], rng.randrange(2, 7) if f.bursts else 1
        if group:
            grouped.append(group[0] if len(group) == 1 else b"[" + b",".join(group) + b"]")
        if not (f.duplicate or f.malformed):
            return grouped
        out: list[bytes] = []
        for text in grouped:
            if f.malformed and rng.random() < f.odds:
                out.append(GARBAGE[rng.randrange(len(GARBAGE))])
            out.append(text)
            if f.duplicate and rng.random() < f.odds:
                out.append(text)
        return out


_UNKNOWN = frames.render(frames.unknown_event("0", "0x" + "0" * 64, "0"))


def _lower(best_bid: str, tick: int) -> str:
    """A best bid one tick lower ("0", no bid, becomes one tick): always a different top."""
    pips = parse_price(best_bid)
    return fmt_price(pips - tick if pips >= tick else tick)


def strip_lost(items: list[tuple[Msg, bytes]], lost: Iterable[str]) -> list[tuple[Msg, bytes]]:
    """Withhold everything about lost tokens: their messages, and their legs of two-leg
    price changes (the other leg still arrives)."""
    gone = set(lost)
    out: list[tuple[Msg, bytes]] = []
    for msg, text in items:
        changes = msg.get("price_changes")
        if changes is not None:
            kept = [c for c in changes if c["asset_id"] not in gone]
            if not kept:
                continue
            if len(kept) < len(changes):
                msg = {**msg, "price_changes": kept}
                text = frames.render(msg)
        elif msg.get("asset_id") in gone:
            continue
        out.append((msg, text))
    return out


def _sweep_key(msg: Msg) -> tuple[str, str, frozenset[str]] | None:
    changes = msg.get("price_changes")
    if changes is None:
        return None
    return (msg["market"], msg["timestamp"], frozenset(c["hash"] for c in changes))


def restate_sweeps(items: list[tuple[Msg, bytes]]) -> list[tuple[Msg, bytes]]:
    """Live's rendering of a sweep (a run of price changes with one market, timestamp and
    per-leg hashes): the resting rest first, and every element states the run's last top."""
    out: list[tuple[Msg, bytes]] = []
    i = 0
    while i < len(items):
        key = _sweep_key(items[i][0])
        j = i + 1
        while key is not None and j < len(items) and _sweep_key(items[j][0]) == key:
            j += 1
        if j - i < 2:
            out.append(items[i])
            i += 1
            continue
        run = [msg for msg, _ in items[i:j]]
        final = {c["asset_id"]: (c["best_bid"], c["best_ask"]) for c in run[-1]["price_changes"]}
        run.sort(key=lambda m: m["price_changes"][0]["size"] == "0")  # rests, then removals
        for msg in run:
            restated = [
                {**c, "best_bid": final[c["asset_id"]][0], "best_ask": final[c["asset_id"]][1]}
                for c in msg["price_changes"]
            ]
            new = {**msg, "price_changes": restated}
            out.append((new, frames.render(new)))
        i = j
    return out

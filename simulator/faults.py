"""Fault injection: per-connection flags, and the shaping of a connection's frames by them.

Every fault here is something live clients have reported (PROTOCOL.md §3.8, §5). Shaping
only adds, regroups, re-spells or withholds frames; applied in order, the frames a client
gets still lead to the true book (except `stall`/ceilings, whose whole point is missing data).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace

from simulator import frames
from simulator.frames import Msg


__all__ = ["Faults", "Shaper"]

GARBAGE = (b'{"market":"0x', b"<html>502 Bad Gateway</html>", b'[{"event_type":"book",',
           b"\x00\x00", b'{"event_type": price_change}')
"""Malformed frame texts (truncated JSON, a proxy's error page, bare junk)."""


@dataclass
class Faults:
    """What a connection does wrong. All off by default: a healthy exchange."""

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
        return any(getattr(self, f.name) for f in fields(self)
                   if f.type in ("bool", bool) and f.name != "stall")


class Shaper:
    """Applies one connection's faults to the messages of a batch, with its own randomness."""

    def __init__(self, seed: int) -> None:
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.delayed: list[bytes] = []

    def shape(self, faults: Faults, items: list[tuple[Msg, bytes]],
              wanted: set[str]) -> list[bytes]:
        """Frame texts for this batch: `items` are (message, its rendered text) in order."""
        self.faults = faults
        return self._frame(self._objects(items, wanted))

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

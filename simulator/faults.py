"""Fault injection flags, per connection (and server-wide defaults for new connections)."""

from __future__ import annotations

from dataclasses import dataclass


__all__ = ["Faults"]


@dataclass
class Faults:
    """What a connection does wrong. All off by default: a healthy exchange."""

    stall: bool = False
    """Stop market data but keep answering PONG (the silent stall users report)."""
    legacy: bool = False
    """Send price changes in the pre-2025-09-15 per-asset `changes` shape."""
    duplicate: bool = False
    """Send some frames twice."""
    ts_regress: bool = False
    """Occasionally send a timestamp slightly older than the previous one."""
    crossed: bool = False
    """Occasionally flash a transient crossed level, removed by the next frame."""
    bursts: bool = False
    """Group several events into one array frame."""
    drop_bba: bool = False
    """Never send best_bid_ask."""
    unknown: bool = False
    """Occasionally send an object with an unknown event_type inside an array."""
    ceiling: int = 500
    """Above this many assets, data stops (the undocumented per-connection stall)."""
    snapshot_ceiling: int = 750
    """Above this many assets, snapshots stop too."""

    def copy(self) -> Faults:
        return Faults(**vars(self))

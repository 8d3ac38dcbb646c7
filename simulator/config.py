"""Simulator settings and counters."""

from __future__ import annotations

from dataclasses import dataclass


__all__ = ["SimConfig", "SimStats"]


@dataclass(frozen=True)
class SimConfig:
    """How the simulated exchange behaves. Defaults are a calm, healthy exchange."""

    markets: int = 20
    seed: int = 1
    rate: float = 50.0
    """Engine actions per second; 0 = as fast as the clients can take them."""
    new_market_every: float = 0.0
    """Seconds between new markets (0 = never); counted in engine steps when rate > 0."""
    resolve_every: float = 0.0
    """Seconds between resolutions (0 = never); counted in engine steps when rate > 0."""
    silence_timeout: float = 60.0
    """Abruptly close a connection whose client sent no message for this long (0 = never)."""
    handshake_limit: int = 0
    """Refuse handshakes with 429 beyond this many per second (0 = no limit), like live."""
    v2_fraction: float = 0.0
    """Share of markets listed on Gamma as `version: "v2"` (ids in `positionIds`)."""
    batch_interval: float = 0.005
    """Seconds between flow batches when rate > 0."""
    max_batch: int = 512
    """Actions per batch when rate = 0 (the loop yields between batches)."""
    sweep_share: float = 0.25
    """Share of trades that sweep 2–3 whole levels (one price_change per level)."""
    ltp_delay_ms: int = 35
    """A trade's `last_trade_price` follows its books this much later (engine clock)."""
    odd_ticks: float = 0.0
    """Share of markets on a 0.005 or 0.0025 tick (chosen per seed; never reticked)."""


@dataclass
class SimStats:
    """Counters a test or benchmark can read at any time."""

    actions: int = 0
    messages: int = 0
    frames: int = 0
    accepted: int = 0
    rejected: int = 0
    not_found: int = 0
    dropped: int = 0
    silenced: int = 0
    snapshots: int = 0
    invalid: int = 0
    http_requests: int = 0
    no_new_assets: int = 0
    early_pings: int = 0
    closed_at_accept: int = 0

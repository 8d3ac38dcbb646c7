"""A faithful local Polymarket: market engine, WS market channel, REST and Gamma twins, faults."""

from __future__ import annotations

from simulator.engine import Engine
from simulator.faults import Faults
from simulator.server import SimConfig, SimConnection, Simulator


__all__ = ["Engine", "Faults", "SimConfig", "SimConnection", "Simulator"]

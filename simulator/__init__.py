"""A faithful local Polymarket: market engine, WS market channel, REST and Gamma twins, faults.

sim = Simulator(SimConfig(markets=20, seed=1, rate=200.0))
await sim.start(host="127.0.0.1", port=0, http_port=0)
... sim.ws_url, sim.http_url, sim.engine.true_book(token), sim.connections[0].faults ...
await sim.stop()
"""

from __future__ import annotations

from polybus.simulator.config import SimConfig, SimStats
from polybus.simulator.connection import SimConnection
from polybus.simulator.engine import Engine
from polybus.simulator.faults import Faults
from polybus.simulator.market import Market
from polybus.simulator.server import Simulator


__all__ = ["Engine", "Faults", "Market", "SimConfig", "SimConnection", "SimStats", "Simulator"]

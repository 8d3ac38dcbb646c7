"""A faithful local Polymarket: market engine, WS market channel, REST and Gamma twins, faults.

    sim = Simulator(SimConfig(markets=20, seed=1, rate=200.0))
    await sim.start(host="127.0.0.1", port=0, http_port=0)
    ... sim.ws_url, sim.http_url, sim.engine.true_book(token), sim.connections[0].faults ...
    await sim.stop()
"""

from __future__ import annotations

from simulator.config import SimConfig, SimStats
from simulator.connection import SimConnection
from simulator.engine import Engine
from simulator.faults import Faults
from simulator.market import Market
from simulator.server import Simulator


__all__ = ["Engine", "Faults", "Market", "SimConfig", "SimConnection", "SimStats", "Simulator"]

"""`polybus simulate`: run the simulated Polymarket until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any


__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the `simulate` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate", help="run a local simulated Polymarket (WS market channel, REST, Gamma)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="WebSocket port (default 8765)")
    p.add_argument("--http-port", type=int, default=None, help="REST/Gamma port (default port+1)")
    p.add_argument("--markets", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=50.0,
                   help="engine actions per second (0 = as fast as possible)")
    p.add_argument("--new-market-every", type=float, default=0.0, help="seconds (0 = never)")
    p.add_argument("--resolve-every", type=float, default=0.0, help="seconds (0 = never)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; print one ready line with the URLs."""
    from polybus.logs import configure_logging
    from simulator.server import SimConfig, Simulator

    configure_logging(None, None)
    config = SimConfig(markets=args.markets, seed=args.seed, rate=args.rate,
                       new_market_every=args.new_market_every, resolve_every=args.resolve_every)

    async def main() -> None:
        sim = Simulator(config)
        http_port = args.http_port if args.http_port is not None else args.port + 1
        await sim.start(args.host, args.port, http_port)
        print(f"simulator.ready ws_url={sim.ws_url} http_url={sim.http_url} "
              f"markets={config.markets} tokens={len(sim.engine.tokens())}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await sim.stop()

    asyncio.run(main())
    return 0

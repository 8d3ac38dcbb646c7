"""`polybus simulate`: run the simulated Polymarket until SIGINT/SIGTERM.

Prints one ready line (`simulator.ready ws_url=… http_url=… markets=… tokens=…`) once both
servers listen, so a parent process can wait for it; the HTTP side also serves `/_sim/*`
controls (pause, resume, drop, stall, truth, tokens) for tests in another process.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the `simulate` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="run a local simulated Polymarket (WS market channel, REST, Gamma)",
        description="Run a local simulated Polymarket: WS market channel, REST and Gamma twins.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="WebSocket port (default 8765)")
    p.add_argument(
        "--http-port", type=int, default=None, help="REST/Gamma/control port (default: --port + 1)"
    )
    p.add_argument("--markets", type=int, default=20, help="binary markets (default 20)")
    p.add_argument("--seed", type=int, default=1, help="flow seed (default 1)")
    p.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="engine actions per second (default 50; 0 = as fast as possible)",
    )
    p.add_argument(
        "--new-market-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="a new market every SECONDS (default 0 = never)",
    )
    p.add_argument(
        "--resolve-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="a market resolves every SECONDS (default 0 = never)",
    )
    p.add_argument(
        "--silence-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="close clients silent this long (default 60; 0 = never)",
    )
    p.add_argument(
        "--handshake-limit",
        type=int,
        default=0,
        metavar="N",
        help="answer 429 beyond N handshakes per second (default 0 = no limit)",
    )
    p.add_argument(
        "--v2-fraction",
        type=float,
        default=0.0,
        help="share of Gamma markets listed as version v2 (default 0)",
    )
    p.add_argument(
        "--sweep-share",
        type=float,
        default=0.25,
        help="share of trades sweeping 2-3 levels (default 0.25)",
    )
    p.add_argument(
        "--ltp-delay-ms",
        type=int,
        default=35,
        metavar="MS",
        help="last_trade_price this long after a trade's books (default 35)",
    )
    p.add_argument(
        "--odd-ticks",
        type=float,
        default=0.0,
        help="share of markets on a 0.005 or 0.0025 tick (default 0)",
    )
    p.set_defaults(func=run)


async def run(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Serve until stopped; print one ready line with the URLs."""
    from polybus.simulator.config import SimConfig
    from polybus.simulator.server import Simulator

    config = SimConfig(
        markets=args.markets,
        seed=args.seed,
        rate=args.rate,
        new_market_every=args.new_market_every,
        resolve_every=args.resolve_every,
        silence_timeout=args.silence_timeout,
        v2_fraction=args.v2_fraction,
        handshake_limit=args.handshake_limit,
        sweep_share=args.sweep_share,
        ltp_delay_ms=args.ltp_delay_ms,
        odd_ticks=args.odd_ticks,
    )
    http_port = (
        args.http_port if args.http_port is not None else (args.port + 1 if args.port else 0)
    )
    sim = Simulator(config)
    await sim.start(args.host, args.port, http_port)
    print(
        f"simulator.ready ws_url={sim.ws_url} http_url={sim.http_url} "
        f"markets={len(sim.engine.markets())} tokens={len(sim.engine.tokens())}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await sim.stop()
    return 0

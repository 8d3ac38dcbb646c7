"""`polybus simulate` as a subprocess: ready line, HTTP controls, clean exit on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from polybus.simulator import cli
from tests.simulator.client import Client, http


SCRIPT = """
import sys
from polybus.cli import main
sys.exit(main(sys.argv[1:]))
"""
"""The console face runs the command: its signal handling makes SIGTERM a clean stop."""


def test_register_adds_simulate_with_defaults() -> None:
    """register() adds `simulate` with the documented defaults and run as its func."""
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["simulate"])
    assert (args.host, args.port, args.http_port, args.markets, args.seed, args.rate) == (
        "127.0.0.1",
        8765,
        None,
        20,
        1,
        50.0,
    )
    assert (args.sweep_share, args.ltp_delay_ms, args.odd_ticks) == (0.25, 35, 0.0)
    assert args.func is cli.run


async def test_subprocess_serves_until_sigterm() -> None:
    """The subcommand prints one ready line, serves WS and HTTP (with its flags: here every
    market on an odd tick), and exits 0 on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        "simulate",
        "--port",
        "0",
        "--markets",
        "3",
        "--rate",
        "200",
        "--odd-ticks",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        assert line.startswith("simulator.ready ") and fields["tokens"] == "6"
        status, tokens = await http(f"{fields['http_url']}/_sim/tokens")
        assert status == 200 and len(tokens) == 6
        client = await Client.open(fields["ws_url"], tokens)
        await client.barrier()
        assert len(client.objects) >= 6
        assert {o["tick_size"] for o in client.objects[:6]} == {"0.005", "0.0025"}
        await client.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

"""`polybus <command>`: one console script; each package registers its own subcommands.

A package's `cli.register(subparsers)` adds its commands, each with `func(args) -> int`.
`.env` is loaded here and only here, before any configuration is read.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from polybus import __version__, stopping


__all__ = ["build_parser", "main"]

_PACKAGES = ("polybus.feeder.cli", "polybus.simulator.cli", "polybus.consumers.cli",
             "polybus.demo", "polybus.consumers.health", "polybus.replay.record",
             "polybus.replay.cli", "polybus.replay.plot")
"""Modules with a `register(subparsers)`; a missing one (not yet built) is skipped."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every package's subcommands registered."""
    parser = argparse.ArgumentParser(prog="polybus", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"polybus {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _PACKAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `polybus` script.

    Exit codes: a command's own, 2 for a bad setting (one line on stderr, never a
    traceback), 128+N when stopped by signal N before the command could finish by itself.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stopping.interrupt_on_sigterm()
    try:
        return _dispatch(argv)
    except (KeyboardInterrupt, asyncio.CancelledError):
        code = 128 + (stopping.received() or signal.SIGINT)
        if stopping.received() and threading.current_thread() is threading.main_thread():
            # Stopped by a signal that may have landed anywhere — half-way through building
            # an event loop, say: leave now rather than let finalizers trip over the halves.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _dispatch(argv: Sequence[str] | None) -> int:
    from polybus.feeder.config import check_common
    from polybus.wire.errors import ConfigError

    try:
        from dotenv import load_dotenv

        load_dotenv(override=False)
    except ImportError:  # pragma: no cover - python-dotenv is a runtime dependency
        pass
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    flags = {"REDIS_URL": getattr(args, "redis_url", None),
             "POLYBUS_PREFIX": getattr(args, "prefix", None),
             "POLYBUS_LOG_LEVEL": getattr(args, "log_level", None),
             "POLYBUS_LOG_FORMAT": getattr(args, "log_format", None)}
    try:
        check_common(os.environ, flags)
    except ConfigError as exc:
        print(f"polybus {args.command}: {exc}", file=sys.stderr)
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

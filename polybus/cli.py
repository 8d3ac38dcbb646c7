"""`polybus <command>`: one console script; each package registers its own subcommands.

A package's `cli.register(subparsers)` adds its commands, each with `func(args) -> int`.
`.env` is loaded here and only here, before any configuration is read.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from polybus import __version__


__all__ = ["build_parser", "main"]

_PACKAGES = ("feeder.cli", "simulator.cli", "consumers.cli", "polybus.demo", "polybus.health",
             "polybus.record", "polybus.replay", "polybus.plot")
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
    """Entry point of the `polybus` script."""
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
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

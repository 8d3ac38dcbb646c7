"""`polybus <command>`: the one process face — what every command needs, done once, here.

A package's `cli.register(subparsers)` adds its subcommands with their own flags only, and
`set_defaults(func=run)` where the command is `async def run(args, stop) -> int`. A command
declares, with the same `set_defaults`:
- `uses_redis=True`: the face adds `--redis-url` and `--prefix` (a command that defines one of
  them itself keeps its own: replay's prefix never comes from the environment); the command
  resolves them with `polybus.wire.settings.bus_target`, as every client does;
- `stop_grace=S`: seconds a graceful stop may take before the command is cancelled (default
  1.0; the feeder takes 1.6 for its own 1.3 s stop budget);
- `log_level_default=NAME`: the level when neither `--log-level` nor POLYBUS_LOG_LEVEL says.
Every command gets `--log-level` and `--log-format`. Commands never install signal handlers,
configure logging or load `.env`; nothing in wire/feeder/consumers/simulator/replay imports
this module.

Before a command runs, the face loads `.env` from the working directory (never overriding the
environment), checks the settings every command reads (`check_common`) and configures logging
(structlog events on stderr: JSON off a terminal, console on one). `SETTLE_AFTER` seconds into
the command, what it has built is frozen out of the cyclic GC's sight (`gc.freeze`), so full
collections, pauses of the whole process, walk only what came later.

Stopping when told: SIGTERM or SIGINT ends every command within two seconds. Three layers,
because a signal can come at any moment:
- before the command's event loop runs (imports, parsing), SIGTERM acts like Ctrl-C:
  `KeyboardInterrupt`, which exits 128+N — at once with `os._exit` when a signal interrupted
  the start, since it may have landed half-way through building an event loop;
- inside the loop the first signal sets the command's `stop`; a command still running
  `stop_grace` seconds later — wedged in a call to a Redis that does not answer, say — has
  its main task cancelled, again every 0.1 s, so even its cleanup cannot hang; a second
  signal cancels at once;
- a process still alive `DEADLINE` seconds after the first signal exits from a watchdog thread
  (`os._exit`), with one line saying so: the promise holds even if the loop itself is stuck.
Only the main thread can take signals: `main` run from another thread (a test, an embedding
application) installs nothing, and whoever runs it stops it.

Exit codes:
    0      done, or stopped by a signal and finished the graceful stop in time
    1      failure (the command's own verdict: unhealthy, a Redis lost mid-run, …)
    2      usage or configuration: a bad flag, a bad setting (ConfigError), a bad token id
           (InvalidToken), a Redis that cannot be reached — one line on stderr naming what to
           fix, never a traceback
    128+N  stopped by signal N before the command could finish by itself
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType
from typing import Any

import orjson
import structlog
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
    TimeoutError as RedisTimeoutError,
)

from polybus import __version__
from polybus.redisio import REDIS_ERRORS
from polybus.wire.errors import ConfigError, InvalidToken


__all__ = ["DEADLINE", "GRACE", "Command", "build_parser", "configure_logging", "main"]

Command = Callable[[argparse.Namespace, asyncio.Event], Awaitable[int]]
"""What a subcommand's `func` is: run until done or until `stop` is set; the exit code."""

_PACKAGES = (
    "polybus.feeder.cli",
    "polybus.simulator.cli",
    "polybus.consumers.cli",
    "polybus.demo",
    "polybus.consumers.health",
    "polybus.replay.record",
    "polybus.replay.cli",
    "polybus.replay.plot",
)
"""Modules with a `register(subparsers)`; a missing one (not yet built) is skipped."""

GRACE = 1.0
"""Seconds a graceful stop may take before the main task is cancelled (unless declared)."""
DEADLINE = 1.9
"""Seconds after the first signal at which the process exits whatever it is doing."""
SETTLE_AFTER = 2.0
"""Seconds after a command's loop starts before what it built is frozen (`_freeze_heap`):
long enough for its imports and clients, short enough to be done before steady work."""


# --- the parser -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The full parser: every package's subcommands, each with the common flags it needs."""
    parser = argparse.ArgumentParser(
        prog="polybus",
        description="One Polymarket market-data feed on Redis, many "
        "strategies reading it: run the feeder, inspect the bus, record and replay sessions.",
    )
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
    for command in subparsers.choices.values():
        _add_common_flags(command)
    return parser


def _add_common_flags(p: argparse.ArgumentParser) -> None:
    flags: list[tuple[str, dict[str, Any]]] = []
    if p.get_default("uses_redis"):
        flags += [
            ("--redis-url", {"help": "Redis URL (env REDIS_URL)"}),
            ("--prefix", {"help": "key prefix (env POLYBUS_PREFIX, default pm)"}),
        ]
    flags += [
        ("--log-level", {"help": "debug|info|warning (env POLYBUS_LOG_LEVEL)"}),
        (
            "--log-format",
            {
                "choices": ["json", "console"],
                "help": "default: console on a terminal, json otherwise",
            },
        ),
    ]
    for flag, options in flags:
        try:
            p.add_argument(flag, default=None, **options)
        except argparse.ArgumentError:
            pass  # the command defines this flag itself, with its own meaning


# --- main -----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `polybus` script: parse, set up, run the command, its exit code."""
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    _interrupt_on_sigterm()
    try:
        return _dispatch(argv)
    except (KeyboardInterrupt, asyncio.CancelledError):
        code = 128 + (_first_signal() or signal.SIGINT)
        if _first_signal() and threading.current_thread() is threading.main_thread():
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

    _load_dotenv()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    flags = {
        "REDIS_URL": getattr(args, "redis_url", None),
        "POLYBUS_PREFIX": getattr(args, "prefix", None),
        "POLYBUS_LOG_LEVEL": args.log_level,
        "POLYBUS_LOG_FORMAT": args.log_format,
    }
    try:
        check_common(os.environ, flags)
    except ConfigError as exc:
        return _refuse(args, str(exc))
    configure_logging(
        args.log_level, args.log_format, default_level=getattr(args, "log_level_default", "info")
    )
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the command in its own event loop; what escapes it becomes an exit code."""
    try:
        return asyncio.run(_main_task(args))
    except (ConfigError, InvalidToken) as exc:
        return _refuse(args, str(exc))
    except REDIS_ERRORS as exc:  # a cluster's own errors too (no node serves a slot, …)
        if not getattr(args, "uses_redis", False):
            raise
        lost = isinstance(exc, RedisConnectionError | RedisTimeoutError)
        return _refuse(args, f"Redis at {_redis_url(args)}{' unreachable' if lost else ''}: {exc}")
    except BrokenPipeError:  # `polybus tail | head`: the reader left; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


async def _main_task(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    _on_stop(stop.set, grace=getattr(args, "stop_grace", GRACE))
    asyncio.get_running_loop().call_later(SETTLE_AFTER, _freeze_heap)
    command: Command = args.func
    return int(await command(args, stop))


def _freeze_heap() -> None:
    """Take what a command built while starting (modules, config, its clients) out of the
    cyclic collector's sight for good: it lives as long as the process anyway, and a full
    collection, a pause of the whole process, walks every tracked object. The ~60,000 of a
    feeder's start cost each full collection ~40 ms; frozen, nothing (bench/gc_pause.py).
    Books held later are not frozen: they change, and a frozen cycle is never freed.
    The young generations are collected first, so the start's recent garbage is not frozen
    with it; not a full collection, which would be the very pause this saves (40-60 ms, in
    the middle of a feeder's first seconds of flow)."""
    started = time.perf_counter()
    gc.collect(1)
    gc.freeze()
    structlog.get_logger("polybus").debug(
        "process.heap.frozen",
        objects=gc.get_freeze_count(),
        ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _refuse(args: argparse.Namespace, problem: str) -> int:
    """Usage or configuration: one line naming what to fix, exit 2."""
    print(f"polybus {args.command}: {problem}", file=sys.stderr)
    return 2


def _redis_url(args: argparse.Namespace) -> str:
    from polybus.feeder.config import redact
    from polybus.wire.settings import bus_target

    return redact(bus_target(os.environ, redis_url=getattr(args, "redis_url", None)).redis_url)


def _load_dotenv() -> None:
    """`.env` of the working directory (or a parent) into the environment, never over it."""
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:  # pragma: no cover - python-dotenv is a runtime dependency
        return
    load_dotenv(find_dotenv(usecwd=True), override=False)


# --- logging --------------------------------------------------------------------------------
def configure_logging(
    level: str | None = None, fmt: str | None = None, *, default_level: str = "info"
) -> None:
    """Configure structlog globally, always on stderr (stdout belongs to the command).

    `level`/`fmt` (flags) win over POLYBUS_LOG_LEVEL/POLYBUS_LOG_FORMAT; `fmt` is "json",
    "console" or, unset everywhere, console on a terminal and json otherwise. Libraries never
    call this; `main` does, once, before the command runs (and test helper processes may)."""
    level_name = (level or os.environ.get("POLYBUS_LOG_LEVEL") or default_level).upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    chosen = (
        fmt
        or os.environ.get("POLYBUS_LOG_FORMAT")
        or ("console" if sys.stderr.isatty() else "json")
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if chosen == "json":
        structlog.configure(
            processors=[
                *shared,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
            cache_logger_on_first_use=False,  # tests reconfigure; nothing logs per message
        )
    else:
        structlog.configure(
            processors=[*shared, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            cache_logger_on_first_use=False,  # tests reconfigure; nothing logs per message
        )


# --- signals --------------------------------------------------------------------------------
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []


def _first_signal() -> int | None:
    """The first stop signal this process received, if any."""
    return _received[0] if _received else None


def _note(signum: int) -> bool:
    """Remember a signal; True for the first one (and arm the watchdog then)."""
    _received.append(signum)
    if len(_received) > 1:
        return False
    timer = threading.Timer(DEADLINE, _hard_exit, args=(signum,))
    timer.daemon = True
    timer.start()
    return True


def _hard_exit(signum: int) -> None:
    sys.stderr.write(f"polybus: still running {DEADLINE:g}s after signal {signum}; exiting\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _note(signum)
    raise KeyboardInterrupt


def _interrupt_on_sigterm() -> None:
    """Until the command's loop runs, SIGTERM and SIGINT raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _SIGNALS:
        signal.signal(sig, _interrupt)


def _on_stop(callback: Callable[[], None], *, grace: float) -> None:
    """Make SIGTERM/SIGINT call `callback`, then cancel the current task if it lingers.

    Called first thing in the main task (the one `asyncio.run` runs)."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def cancel_until_done() -> None:
        if main_task is not None and not main_task.done():
            main_task.cancel()
            loop.call_later(0.1, cancel_until_done)

    def handle(signum: int) -> None:
        if _note(signum):
            callback()
            loop.call_later(grace, cancel_until_done)
        else:
            cancel_until_done()

    for sig in _SIGNALS:
        try:
            loop.add_signal_handler(sig, handle, sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            return


if __name__ == "__main__":
    sys.exit(main())

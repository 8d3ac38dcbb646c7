"""Stopping when told: SIGTERM or SIGINT ends every `polybus` command within two seconds.

Three layers, because a command can be anywhere when the signal comes:
- before a command's event loop has its own handler (imports, parsing, a synchronous start),
  SIGTERM acts like Ctrl-C: `KeyboardInterrupt`, which `polybus.cli.main` turns into 128+N;
- inside the loop, `on_stop(callback)` makes the signal call the command's graceful stop
  (flush, delete a health key, …); a command still running `GRACE` seconds later — wedged in
  a call to a Redis that does not answer, say — has its main task cancelled, again every
  0.1 s, so even its cleanup cannot hang; a second signal cancels at once;
- a process still alive `DEADLINE` seconds after the signal exits from a watchdog thread
  (`os._exit`), with one line saying so: the promise holds even if the loop itself is stuck.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType


__all__ = ["DEADLINE", "GRACE", "interrupt_on_sigterm", "on_stop", "received"]

GRACE = 1.0
"""Seconds a graceful stop may take before the main task is cancelled."""
DEADLINE = 1.9
"""Seconds after the first signal at which the process exits whatever it is doing."""

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []


def received() -> int | None:
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


def interrupt_on_sigterm() -> None:
    """Until a command installs its own handler, SIGTERM and SIGINT raise KeyboardInterrupt.

    Only the main thread can take signals: a command run from another thread (a test, an
    embedding application) is stopped by whoever runs it."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _SIGNALS:
        signal.signal(sig, _interrupt)


def on_stop(callback: Callable[[], None], *, grace: float = GRACE) -> None:
    """Make SIGTERM/SIGINT call `callback`, then cancel the current task if it lingers.

    Call from the command's main coroutine (the task `asyncio.run` runs).
    """
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def cancel_until_done() -> None:
        if main is not None and not main.done():
            main.cancel()
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

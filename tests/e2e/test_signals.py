"""Every long-running command stops within 2 s of SIGTERM, at any stage (issue 10, item 1).

Each command runs as a real process against a Redis that cannot help it: a port nobody
listens on (refused: the feeder retries with backoff) or a "black hole" that accepts the TCP
connection and never answers (every Redis call hangs). The clock starts once the process is
demonstrably up — its first output line, or its first connection to the black hole — so the
interpreter's start is not counted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import free_port


ROOT = Path(__file__).resolve().parents[2]
SESSION = ROOT / "tests" / "data" / "sessions" / "calm.jsonl.gz"
T = "123456789"
BUDGET = 2.0
"""The promise: seconds from SIGTERM to exit."""
MARGIN = 0.6
"""Interpreter teardown on a loaded 2-core machine."""


class BlackHole:
    """A TCP server that accepts connections, reads what comes and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def hole():
    bh = BlackHole()
    yield bh
    bh.close()


def _commands(redis_url: str) -> dict[str, list[str]]:
    ws = f"ws://127.0.0.1:{free_port()}/ws/market"
    return {
        "feed": ["feed", "--tokens", T, "--redis-url", redis_url, "--ws-url", ws],
        "tail": ["tail", "--redis-url", redis_url],
        "top": ["top", "--redis-url", redis_url],
        "record": ["record", "--redis-url", redis_url, "--tokens", T, "/dev/null"],
        "replay": ["replay", str(SESSION), "--redis-url", redis_url, "--quiet"],
        "health": ["health", "--redis-url", redis_url],
        "book": ["book", T, "--redis-url", redis_url],
        "demo": ["demo", "--quiet", "--markets", "2"],
    }


def _start(argv: list[str], env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "POLYBUS_LOG_FORMAT": "json", "POLYBUS_LOG_LEVEL": "info", **env_extra}
    return subprocess.Popen(
        [sys.executable, "-m", "polybus", *argv],
        cwd="/",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _first_line(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bytes:
    """Block until the process writes its first line on stdout or stderr."""
    got: list[bytes] = []
    done = threading.Event()

    def read(stream) -> None:
        line = stream.readline()
        if line and not done.is_set():
            got.append(line)
            done.set()

    for stream in (proc.stdout, proc.stderr):
        threading.Thread(target=read, args=(stream,), daemon=True).start()
    assert done.wait(timeout), "the process wrote nothing"
    return got[0]


def _stop_within_budget(proc: subprocess.Popen[bytes]) -> float:
    assert proc.poll() is None, f"exited before the signal: {proc.returncode}"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(BUDGET + MARGIN + 5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("still running 7 s after SIGTERM") from None
    return time.monotonic() - sent


@pytest.mark.parametrize("command", list(_commands("redis://x:1/0")))
def test_sigterm_ends_the_command_while_redis_never_answers(hole: BlackHole, command: str) -> None:
    """With Redis accepting but never answering, SIGTERM ends the command within 2 s."""
    url = f"redis://127.0.0.1:{hole.port}/0"
    proc = _start(_commands(url)[command], {"REDIS_URL": url})
    try:
        assert hole.accepted.wait(30), "the command never reached Redis"
        elapsed = _stop_within_budget(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert elapsed < BUDGET + MARGIN, f"{command} took {elapsed:.2f}s to stop"
    assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


@pytest.mark.parametrize("command", ["feed", "demo", "simulate", "replay-serve"])
def test_sigterm_ends_the_command_while_redis_refuses_connections(command: str) -> None:
    """With nothing listening on the Redis port (retried with backoff), SIGTERM still ends
    the command within 2 s of its first line; the feeder exits 0, as a clean stop."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    argv = {
        "feed": _commands(url)["feed"],
        "demo": _commands(url)["demo"],
        "simulate": ["simulate", "--port", "0", "--markets", "2"],
        "replay-serve": ["replay", str(SESSION), "--serve", "0", "--quiet"],
    }[command]
    proc = _start(argv, {"REDIS_URL": url})
    try:
        _first_line(proc)
        elapsed = _stop_within_budget(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert elapsed < BUDGET + MARGIN, f"{command} took {elapsed:.2f}s to stop"
    if command == "feed":  # a clean stop, even before Redis was ever reached
        assert proc.returncode == 0
    assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


# --- the face's three layers, with a command that never finishes its graceful stop --------
STUBBORN = """
import asyncio, time

def register(subparsers):
    p = subparsers.add_parser("stubborn")
    p.add_argument("--wedge", action="store_true", help="block the event loop once stopped")
    p.set_defaults(func=run)

async def run(args, stop):
    print("ready", flush=True)
    await stop.wait()
    print("stopping", flush=True)
    if args.wedge:
        time.sleep(30)  # the loop itself is stuck: only the watchdog can end this
    await asyncio.Event().wait()  # a graceful stop that never ends
    return 0
"""
RUN_STUBBORN = """
import sys
import polybus.cli as face
face._PACKAGES = (*face._PACKAGES, "stubborn_cmd")
sys.exit(face.main(sys.argv[1:]))
"""


def _stubborn(tmp_path: Path, *argv: str) -> subprocess.Popen[str]:
    (tmp_path / "stubborn_cmd.py").write_text(STUBBORN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-c", RUN_STUBBORN, "stubborn", *argv],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _stop_stubborn(proc: subprocess.Popen[str], second: bool = False) -> float:
    """SIGTERM once the command is ready (again once it saw the first); seconds to exit."""
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "stopping\n"
        if second:
            proc.send_signal(signal.SIGTERM)
        proc.wait(BUDGET + MARGIN + 5)
        return time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_lingering_stop_is_cancelled_after_the_grace(tmp_path: Path) -> None:
    """A graceful stop still running after the grace (1 s) is cancelled: exit 128+15,
    between 1 s and the 2 s promise, no traceback."""
    proc = _stubborn(tmp_path)
    elapsed = _stop_stubborn(proc)
    assert proc.returncode == 128 + signal.SIGTERM
    assert 1.0 <= elapsed < BUDGET + MARGIN, f"{elapsed:.2f}s"
    assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


def test_a_second_signal_cancels_at_once(tmp_path: Path) -> None:
    """A second SIGTERM does not wait for the grace: the command is cancelled at once."""
    proc = _stubborn(tmp_path)
    elapsed = _stop_stubborn(proc, second=True)
    assert proc.returncode == 128 + signal.SIGTERM
    assert elapsed < 1.0, f"took {elapsed:.2f}s: the second signal waited for the grace"


def test_a_stuck_loop_ends_by_the_watchdog(tmp_path: Path) -> None:
    """A command that blocks the event loop itself is ended by the watchdog at 1.9 s, with
    one line saying so."""
    proc = _stubborn(tmp_path, "--wedge")
    elapsed = _stop_stubborn(proc)
    assert proc.returncode == 128 + signal.SIGTERM
    assert 1.9 <= elapsed < BUDGET + MARGIN, f"{elapsed:.2f}s"
    assert "still running 1.9s after signal 15; exiting" in proc.stderr.read()  # type: ignore[union-attr]

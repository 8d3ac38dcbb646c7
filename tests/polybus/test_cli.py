"""The one process face (polybus/cli.py): common flags, settings, exit codes, layering."""

from __future__ import annotations

import argparse
import ast
import inspect
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from polybus.cli import GRACE, build_parser, main


ROOT = Path(__file__).resolve().parents[2]
REDIS_COMMANDS = {"feed", "tail", "book", "top", "health", "record", "replay", "demo"}
REFUSED = "redis://user:sekret@127.0.0.1:1/0"
"""A Redis URL nothing listens on, with a password that must never be printed."""


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(p: argparse.ArgumentParser) -> set[str]:
    return {flag for action in p._actions for flag in action.option_strings}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No common setting in the environment, and a working directory without `.env`; what
    `.env` loading adds to os.environ is undone after the test."""
    for var in ("REDIS_URL", "POLYBUS_PREFIX", "POLYBUS_LOG_LEVEL", "POLYBUS_LOG_FORMAT"):
        monkeypatch.setenv(var, "placeholder")  # records the original value, to restore it
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_command_is_an_async_run_of_args_and_stop() -> None:
    """Each subcommand's func is `async def (args, stop) -> int`: the face runs it."""
    for name, p in _subcommands().items():
        func = p.get_default("func")
        assert inspect.iscoroutinefunction(func), name
        assert len(inspect.signature(func).parameters) == 2, name


def test_the_face_adds_the_common_flags() -> None:
    """Every command has the log flags; exactly the commands that use Redis have
    --redis-url and --prefix."""
    commands = _subcommands()
    for name, p in commands.items():
        assert {"--log-level", "--log-format"} <= _flags(p), name
    assert {n for n, p in commands.items() if "--redis-url" in _flags(p)} == REDIS_COMMANDS
    assert {n for n, p in commands.items() if "--prefix" in _flags(p)} == REDIS_COMMANDS


def test_a_command_declares_its_stop_grace() -> None:
    """The feeder's graceful stop gets 1.6 s (its budget is 1.3 s); the others the default."""
    commands = _subcommands()
    assert commands["feed"].get_default("stop_grace") == 1.6
    assert commands["tail"].get_default("stop_grace") is None and GRACE == 1.0


@pytest.mark.parametrize(
    "argv",
    [
        ["tail"],
        ["book", "123"],
        ["top", "--once"],
        ["health"],
        ["record", "out.jsonl", "--tokens", "1"],
        ["replay", str(ROOT / "tests/data/sessions/calm.jsonl.gz")],
    ],
)
def test_an_unreachable_redis_exits_2_with_one_line(argv, clean_env, capsys) -> None:
    """A Redis nobody answers at the start is a setting to fix: exit 2, one line naming the
    URL (password hidden), no traceback."""
    assert main([*argv, "--redis-url", REFUSED]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"polybus {argv[0]}: Redis at redis://user:***@127.0.0.1:1/0 ")
    assert "sekret" not in lines[0]


def test_a_bad_common_setting_exits_2_before_the_command_runs(
    clean_env, monkeypatch, capsys
) -> None:
    """POLYBUS_PREFIX with a space refuses `tail` with one line naming the variable."""
    monkeypatch.setenv("POLYBUS_PREFIX", "a b")
    assert main(["tail", "--redis-url", REFUSED]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "POLYBUS_PREFIX" in lines[0], lines


def test_dotenv_of_the_working_directory_is_read_and_env_wins(
    clean_env, monkeypatch, capsys
) -> None:
    """`.env` in the working directory supplies REDIS_URL; the environment beats it."""
    (clean_env / ".env").write_text("REDIS_URL=redis://127.0.0.1:1/0\n")
    assert main(["health"]) == 2
    assert "127.0.0.1:1/0" in capsys.readouterr().err
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:2/0")
    assert main(["health"]) == 2
    assert "127.0.0.1:2/0" in capsys.readouterr().err


def test_main_from_another_thread_installs_no_signal_handler(clean_env) -> None:
    """Only the main thread takes signals: run elsewhere, the face leaves them alone."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    seen: list[object] = []

    def run() -> None:
        seen.append(main(["book", "abc"]))  # a bad token id: exit 2, no Redis needed
        seen.append({sig: signal.getsignal(sig) for sig in before})

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert seen == [2, before]


CONSOLE_FACE = {
    "polybus.cli",
    "polybus.demo",
    "polybus.redisproc",
    "polybus.stopping",
    "polybus.logs",
    "polybus.__main__",
}


@pytest.mark.parametrize(
    "package", ["wire", "feeder", "consumers", "simulator", "replay", "redisio"]
)
def test_no_package_imports_the_console_face(package: str) -> None:
    """Layering: the packages never reach up into the console face (nor `from polybus
    import X` of its top-level names)."""
    subpackages = {"wire", "feeder", "consumers", "simulator", "replay", "redisio"}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "polybus":
                names = [f"polybus.{a.name}" for a in node.names if a.name not in subpackages]
                assert not names, f"{path}: from polybus import {names}"
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not set(names) & CONSOLE_FACE, f"{path} imports {names}"


def test_a_running_command_freezes_what_it_built_out_of_the_collectors_sight() -> None:
    """A command running past SETTLE_AFTER has frozen its start-up heap (gc.freeze): the
    debug event names tens of thousands of frozen objects."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "polybus", "simulate", "--port", "0", "--markets", "2"),
            *("--log-level", "debug", "--log-format", "json"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stderr is not None
    frozen: list[dict[str, object]] = []
    timer = threading.Timer(30, proc.kill)  # a hung child fails the test, never the suite
    timer.start()
    try:
        for line in proc.stderr:
            event = orjson.loads(line)
            if event.get("event") == "process.heap.frozen":
                frozen.append(event)
                break
    finally:
        timer.cancel()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert frozen, "no process.heap.frozen event before the process ended"
    objects = frozen[0]["objects"]
    assert isinstance(objects, int) and objects > 10_000, frozen[0]

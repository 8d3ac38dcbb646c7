"""A wheel of this checkout, installed in a fresh virtualenv outside it: one `polybus` namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".venv",
    ".git",
    "build",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "tests",
    "bench",
    "docs",
    "examples",
)


def run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv holding only the built wheel; dependencies come from ours, by path."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=SKIP)  # building writes build/ there
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        tmp / "dist",
        source,
        cwd=tmp,
    )
    assert built.returncode == 0, built.stderr
    env = tmp / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", env, cwd=tmp)
    assert made.returncode == 0, made.stderr
    python = env / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp)
    # Our dependencies, as a plain path entry: .pth files there (our editable finder) stay inert.
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((tmp / "dist").glob("polybus-*.whl"))
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        wheel,
        cwd=tmp,
    )
    assert installed.returncode == 0, installed.stderr
    return python


def test_generic_names_are_not_installed(venv: Path, tmp_path: Path) -> None:
    """`import feeder` (or consumers, wire, simulator, replay, redisio) fails outside the
    checkout."""
    for name in ("feeder", "consumers", "wire", "simulator", "replay", "redisio"):
        result = run(venv, "-c", f"import {name}", cwd=tmp_path)
        assert "ModuleNotFoundError" in result.stderr, (name, result.stderr)


def test_the_public_api_imports_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    """`from polybus import MarketFeed` and the seed's names work, from the wheel, Lua included."""
    script = textwrap.dedent("""
        import polybus
        from polybus import (ConnectionState, MarketData, MarketFeed, MarketWebSocket,
                             OrderBook, PriceLevel)
        from polybus.feeder.publisher import LUA
        from polybus.redisio import connect
        assert MarketWebSocket is MarketFeed and "XADD" in LUA.upper()
        print(polybus.__file__)
    """)
    result = run(venv, "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(ROOT) not in result.stdout and "site-packages" in result.stdout


def test_a_users_feeder_module_does_not_shadow_polybus(venv: Path, tmp_path: Path) -> None:
    """A strategy folder with its own feeder.py and consumers/ still runs polybus's own code."""
    (tmp_path / "feeder.py").write_text("raise SystemExit('the user feeder.py was imported')\n")
    (tmp_path / "consumers").mkdir()
    (tmp_path / "consumers" / "__init__.py").write_text("raise SystemExit('user consumers')\n")
    (tmp_path / "wire.py").write_text("raise SystemExit('the user wire.py was imported')\n")
    (tmp_path / "strategy.py").write_text(
        textwrap.dedent("""
        from polybus import MarketFeed
        from polybus.cli import build_parser
        from polybus.feeder.app import Feeder
        feed = MarketFeed(redis_url="redis://127.0.0.1:1/0")
        build_parser().parse_args(["feed", "--tokens", "1"])
        print("ok", Feeder.__module__)
    """)
    )
    result = run(venv, "strategy.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "polybus.feeder.app"]
    script = run(venv.parent / "polybus", "feed", "--help", cwd=tmp_path)
    assert script.returncode == 0 and "--tokens" in script.stdout, script.stderr

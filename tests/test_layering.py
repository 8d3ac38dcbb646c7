"""Package layering (README "Map"): what may import what, so the architecture stays visible.

    polybus  — the console face: cli, demo, redisproc, testing; imports anything
       │
    replay ──► feeder ──► wire ◄── consumers
       └─────► simulator ──┘
    redisio (the Redis client: single server or cluster) ──► wire; feeder, consumers and
    replay may import it

Arrows point at what a package may import; nothing points back up at the face.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("wire", "feeder", "consumers", "simulator", "replay", "redisio")
ALLOWED = {
    "wire": set(),
    "feeder": {"wire", "redisio"},
    "consumers": {"wire", "redisio"},
    "simulator": {"wire"},
    "replay": {"wire", "feeder", "simulator", "redisio"},
    "redisio": {"wire"},
}
"""The other polybus subpackages each one may import (itself always)."""


def imports_of(package: str) -> set[str]:
    """Every module name imported (absolutely) anywhere in a top-level folder's source."""
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                if node.module == "polybus":
                    names.update(f"polybus.{alias.name}" for alias in node.names)
    return names


def polybus_parts(names: set[str]) -> set[str]:
    """The second component of each `polybus.X…` import, or "" for bare `polybus`."""
    return {n.split(".")[1] if "." in n else "" for n in names if n.split(".")[0] == "polybus"}


@pytest.mark.parametrize("package", [*SUBPACKAGES, "polybus", "tests", "bench", "examples"])
def test_nothing_imports_an_unprefixed_package(package: str) -> None:
    """Installed, only `polybus.feeder` exists: `import feeder` works in a checkout alone."""
    tops = {n.split(".")[0] for n in imports_of(package)}
    assert tops & set(SUBPACKAGES) == set()


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_subpackages_import_only_downward(package: str) -> None:
    """A subpackage imports only the ones below it, and never up into the console face."""
    parts = polybus_parts(imports_of(package)) - {package}
    assert parts <= ALLOWED[package], f"{package} imports polybus.{sorted(parts)}"


def test_wire_imports_no_io() -> None:
    """wire/ is pure: nothing of asyncio, redis, websockets, sockets or HTTP."""
    tops = {n.split(".")[0] for n in imports_of("wire")}
    assert tops & {"asyncio", "redis", "websockets", "socket", "aiohttp"} == set()


def test_benches_import_nothing_from_tests() -> None:
    """A bench runs from an installed polybus: it shares helpers via polybus, not tests/."""
    assert {n.split(".")[0] for n in imports_of("bench")} & {"tests", "conftest"} == set()


def test_normalizer_is_sans_io() -> None:
    """feeder/normalize.py takes bytes and returns events: no asyncio, redis or websockets."""
    tree = ast.parse((ROOT / "feeder" / "normalize.py").read_text())
    names = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    names |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert names & {"asyncio", "redis", "websockets"} == set()
    assert not any(isinstance(n, ast.AsyncFunctionDef | ast.Await) for n in ast.walk(tree))


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_installed_name_is_a_link_to_the_folder(package: str) -> None:
    """polybus/<pkg> is the in-tree link that installs each top-level folder as polybus.<pkg>."""
    link = ROOT / "polybus" / package
    assert link.is_symlink() and link.resolve() == (ROOT / package).resolve()

"""Package layering (DESIGN.md §1): wire is pure; feeder and consumers never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> set[str]:
    """Top-level names of every module imported anywhere in a package's source."""
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_wire_imports_no_io() -> None:
    """wire/ is pure: nothing of asyncio, redis, websockets, or the other packages."""
    forbidden = {"asyncio", "redis", "websockets", "feeder", "consumers", "simulator", "socket"}
    assert imported_modules("wire") & forbidden == set()


@pytest.mark.parametrize(("package", "other"), [("feeder", "consumers"), ("consumers", "feeder")])
def test_feeder_and_consumers_never_import_each_other(package: str, other: str) -> None:
    """The two sides meet only through wire/ and Redis."""
    assert other not in imported_modules(package)
    assert "simulator" not in imported_modules(package)


def test_normalizer_is_sans_io() -> None:
    """feeder/normalize.py takes bytes and returns events: no asyncio, redis or websockets."""
    tree = ast.parse((ROOT / "feeder" / "normalize.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module}
    assert names & {"asyncio", "redis", "websockets"} == set()
    assert not any(isinstance(n, ast.AsyncFunctionDef | ast.Await) for n in ast.walk(tree))

"""Imports point down only: taskyard -> api -> scheduler -> protocol, worker -> protocol (docs/architecture.md).

Walks every .py file under the four packages with `ast` (TYPE_CHECKING blocks and function-level imports
included, plus `importlib.import_module("...")` with a literal name) and fails on a forbidden edge.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("taskyard", "api", "scheduler", "worker", "protocol")

# Top-level module names each package must never import (beyond the "nothing imports api" rule).
FORBIDDEN: dict[str, frozenset[str]] = {
    "scheduler": frozenset({"api", "worker", "litestar", "sqlalchemy", "websockets", "openai", "alembic", "psycopg"}),
    # The worker is a standalone SDK: no server-side dependency may leak into it.
    "worker": frozenset(
        {"api", "scheduler", "redis", "sqlalchemy", "litestar", "alembic", "psycopg", "aiosqlite", "fakeredis", "rq"}
    ),
    "api": frozenset({"worker"}),
    # The entry points start workers as processes (`python -m worker`); they never import them.
    "taskyard": frozenset({"worker"}),
}
PROTOCOL_ALLOWED = frozenset({"protocol", "msgspec"}) | frozenset(sys.stdlib_module_names)


def imported_modules(source: str, *, package: str) -> set[str]:
    """Top-level names of every module the source imports (relative imports count as `package`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
        elif isinstance(node, ast.Call) and _is_dynamic_import(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value.split(".")[0])
    return found


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def forbidden_edges(package: str, modules: set[str]) -> set[str]:
    if package == "protocol":
        return modules - PROTOCOL_ALLOWED
    bad = modules & FORBIDDEN.get(package, frozenset())
    if package not in ("taskyard", "api") and "api" in modules:
        bad.add("api")
    if package != "taskyard" and "taskyard" in modules:
        bad.add("taskyard")  # the entry points sit on top: nothing imports them
    return bad


def source_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_point_down_only(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    modules = imported_modules(path.read_text(encoding="utf-8"), package=package)

    assert forbidden_edges(package, modules) == set(), f"{path.relative_to(ROOT)} imports across the layers"


def test_the_walk_finds_the_packages() -> None:
    packages_seen = {path.relative_to(ROOT).parts[0] for path in source_files()}

    assert packages_seen == set(PACKAGES)


@pytest.mark.parametrize(
    ("package", "source", "expected"),
    [
        ("protocol", "import redis", {"redis"}),
        ("protocol", "from litestar import Litestar", {"litestar"}),
        ("protocol", "import json, msgspec\nfrom protocol.errors import ErrorCode", set()),
        ("scheduler", "from api.db import base", {"api"}),
        ("scheduler", "def f():\n    import sqlalchemy", {"sqlalchemy"}),
        ("scheduler", "import redis.asyncio\nfrom protocol import TaskStatus", set()),
        ("worker", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import redis", {"redis"}),
        ("worker", "from scheduler.keys import task_key", {"scheduler"}),
        ("worker", "import importlib\nimportlib.import_module('litestar.app')", {"litestar"}),
        ("worker", "import websockets, openai\nfrom protocol import encode_frame", set()),
        ("api", "import worker.agent", {"worker"}),
        ("api", "from scheduler.client import SchedulerClient\nimport litestar", set()),
        ("api", "from taskyard.cli import main", {"taskyard"}),
        ("taskyard", "from api.app import create_app\nfrom scheduler import keys", set()),
        ("taskyard", "import worker", {"worker"}),
    ],
)
def test_the_checker_catches_forbidden_edges(package: str, source: str, expected: set[str]) -> None:
    assert forbidden_edges(package, imported_modules(source, package=package)) == expected


def test_import_contracts_hold() -> None:
    """import-linter's contracts in pyproject.toml: the layers, and no import circle between siblings anywhere."""
    import shutil
    import subprocess

    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if linter is None:  # pragma: no cover - the dev group installs it
        pytest.skip("import-linter is not installed")
    result = subprocess.run([linter], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:]

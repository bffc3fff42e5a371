"""`__all__` of the public packages lists exactly their public names, and every name resolves."""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every module of the package, found on disk, so a new one cannot slip past.
PROTOCOL_SUBMODULES = tuple(
    sorted(f"protocol.{path.stem}" for path in (ROOT / "protocol").glob("*.py") if path.stem != "__init__")
)


def public_names_of_package(module: types.ModuleType) -> set[str]:
    """Names a package's `__init__` binds for users: everything without a leading underscore, minus submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }


def top_level_definitions(path: Path) -> set[str]:
    """Public names a module defines itself (classes, functions, assignments), read from its source."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_") and name != "logger"}


def assert_all_is_a_resolvable_tuple(module: types.ModuleType) -> tuple[str, ...]:
    exported = module.__all__
    assert isinstance(exported, tuple), f"{module.__name__}.__all__ must be a tuple"
    assert len(set(exported)) == len(exported), f"{module.__name__}.__all__ has duplicates"
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name!r}"
    return exported


def test_protocol_all_lists_exactly_its_public_names() -> None:
    protocol = importlib.import_module("protocol")

    exported = assert_all_is_a_resolvable_tuple(protocol)

    assert set(exported) == public_names_of_package(protocol)


@pytest.mark.parametrize("module_name", PROTOCOL_SUBMODULES)
def test_protocol_module_all_lists_exactly_what_it_defines(module_name: str) -> None:
    module = importlib.import_module(module_name)
    path = Path(module.__file__ or "")

    exported = assert_all_is_a_resolvable_tuple(module)

    assert set(exported) == top_level_definitions(path)


def test_protocol_package_reexports_every_message_view_and_codec_name() -> None:
    protocol = importlib.import_module("protocol")
    for module_name in (
        "protocol.envelope",
        "protocol.errors",
        "protocol.messages",
        "protocol.status",
        "protocol.views",
    ):
        missing = set(importlib.import_module(module_name).__all__) - set(protocol.__all__)
        assert not missing, f"protocol does not re-export {sorted(missing)} from {module_name}"


def test_worker_all_if_defined() -> None:
    worker = importlib.import_module("worker")
    if not hasattr(worker, "__all__"):
        pytest.skip("worker/__init__.py defines no __all__ yet")

    exported = assert_all_is_a_resolvable_tuple(worker)

    assert set(exported) == public_names_of_package(worker)

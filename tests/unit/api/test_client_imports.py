"""The CLI client (`taskyard/client`) is a plain HTTP and /ws client: it imports no server internals."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[3] / "taskyard" / "client"
ALLOWED_THIRD_PARTY = {"httpx", "websockets", "click"}  # click: the command line itself


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_client_imports_only_protocol_itself_and_http_libraries() -> None:
    files = sorted(CLIENT.glob("*.py"))
    assert files
    for path in files:
        for name in _imported(path):
            top = name.split(".")[0]
            ok = (
                top in sys.stdlib_module_names
                or top in ALLOWED_THIRD_PARTY
                or top == "protocol"
                or name == "taskyard.client"
                or name.startswith("taskyard.client.")
            )
            assert ok, f"{path.name} imports {name}"

"""`taskyard dev` keeps its credentials in dev.json: owner-only, replaced whole so no reader sees half of it."""

from __future__ import annotations

import json
import os
import stat
import threading
from typing import TYPE_CHECKING

from taskyard.dev import _read_state, _write_state

if TYPE_CHECKING:
    from pathlib import Path


def test_state_is_owner_only_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    _write_state(path, {"admin": {"email": "a@example.com"}})
    _write_state(path, {"admin": {"email": "b@example.com"}})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["admin"]["email"] == "b@example.com"
    assert [p.name for p in tmp_path.iterdir()] == ["dev.json"]
    assert _read_state(path)["admin"]["email"] == "b@example.com"


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    """A writer rewrites a large state while a reader parses it in a loop: every read is a whole document."""
    path = tmp_path / "dev.json"
    big = {"agent": {"id": "x" * 200_000}}
    _write_state(path, big)
    stop = threading.Event()
    bad: list[str] = []

    def read_loop() -> None:
        while not stop.is_set():
            text = path.read_text()
            try:
                json.loads(text)
            except ValueError:
                bad.append(text[:40])

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for n in range(200):
            _write_state(path, {**big, "n": n})
    finally:
        stop.set()
        reader.join()
    assert bad == []

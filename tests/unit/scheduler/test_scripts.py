"""The Lua library and its Python mirror agree on the constants both sides rely on."""

from __future__ import annotations

import re

from scheduler.scripts import PROGRESS_MARK_EVERY, script_source


def test_the_progress_mark_is_the_same_in_lua_and_python() -> None:
    # The rebuild (api/tasks/reconciler.py) numbers on PROGRESS_MARK_EVERY above a row's seq: it must be the
    # stride the scripts actually use, or a watcher's seen seq could be handed out again.
    found = re.search(r"^local PROGRESS_MARK = (\d+)$", script_source("progress"), re.MULTILINE)
    assert found is not None
    assert int(found.group(1)) == PROGRESS_MARK_EVERY

"""Key names and routing classes."""

from __future__ import annotations

import pytest

from scheduler.keys import Keys, route_id
from scheduler.scripts import SCRIPT_NAMES, script_source
from scheduler.types import TaskSpec


def test_route_id_ignores_capability_order_and_duplicates() -> None:
    assert route_id(None, ("b", "a", "a")) == route_id(None, ("a", "b"))
    assert route_id(None, ("a",)) != route_id(None, ("a", "b"))
    assert route_id("agent-1", ("a",)) == "a:agent-1"
    assert route_id(None, ()).startswith("c:")


def test_every_key_is_under_the_prefix() -> None:
    keys = Keys("ty:{s1}")
    built = [
        keys.task("t"),
        keys.history("t"),
        keys.events(),
        keys.queue("c:x"),
        keys.queues(),
        keys.routes(),
        keys.ord_counter(),
        keys.delayed(),
        keys.deadlines(),
        keys.agents(),
        keys.agent("a"),
        keys.agent_tasks("a"),
        keys.inbox("a"),
        keys.wake(),
        keys.epoch(),
        keys.scheduler_heartbeat("h"),
        keys.watch_channel("o"),
        keys.control_channel(),
    ]
    assert all(k.startswith("ty:{s1}:") for k in built)
    assert len(set(built)) == len(built)


def test_lua_key_builders_mirror_keys_py() -> None:
    lib = script_source("enqueue")
    for fragment in ("':task:'", "':hist:'", "':q:'", "':agent:'", "':tasks'", "':inbox'", "':watch:'"):
        assert fragment in lib


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_documents_its_interface(name: str) -> None:
    own = script_source(name).split("\n", 1)[1]
    header = own[own.index(f"-- {name}") :].split("\nlocal", 1)[0]
    assert "Returns" in header
    assert "Invariant" in header


def test_task_spec_refuses_terminal_status_and_bad_priority() -> None:
    base = {
        "task_id": "t",
        "owner_id": "o",
        "type": "x",
        "input_json": b"{}",
        "agent_id": None,
        "capabilities": (),
        "timeout_s": 1,
        "max_attempts": 1,
    }
    with pytest.raises(ValueError):
        TaskSpec(priority=10, **base)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TaskSpec(priority=1, status="done", **base)  # type: ignore[arg-type]

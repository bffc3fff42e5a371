"""The example agent in Node.js (docs/examples/node-agent), written from docs/protocol.md alone, against the
real server: it takes a task, streams its answer and delivers the result."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.llm_support import Watcher, wait_task
from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e

NODE = shutil.which("node")
AGENT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "node-agent" / "agent.mjs"


def _node_flags() -> list[str]:
    assert NODE is not None
    major = int(
        subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True).stdout[1:].split(".")[0]
    )
    if major < 20:
        pytest.skip(f"node {major} has no built-in WebSocket (20+ needed)")
    return ["--experimental-websocket"] if major < 22 else []


@pytest.mark.skipif(NODE is None, reason="node is not installed (the example agent needs Node.js 20+)")
def test_node_example_agent_runs_a_task_and_streams_its_answer(stack: Stack) -> None:
    admin = stack.create_admin()
    agent_id, token = stack.create_agent(capabilities=["node"], concurrency=2, name="node")
    assert NODE is not None
    stack.spawn(
        "node-agent",
        [NODE, *_node_flags(), str(AGENT)],
        TASKYARD_URL=stack.api_url.replace("http://", "ws://") + "/ws",
        AGENT_ID=agent_id,
        AGENT_TOKEN=token,
    )
    task_id = str(
        stack.submit(admin, type="example.shout", input={"text": "hello from node"}, capabilities=["node"])["id"]
    )
    watcher = Watcher(stack, admin, task_id)
    try:
        watcher.wait_status("done")
        pieces = watcher.pieces()
    finally:
        watcher.close()
    task = wait_task(stack, admin, task_id, "done")
    assert task["result"] == {"text": "HELLO FROM NODE!"}
    assert "".join(p["delta"] for p in pieces) == "HELLO FROM NODE"
    assert task["agentId"] == agent_id
    other = str(stack.submit(admin, type="example.other", input={}, capabilities=["node"], maxAttempts=1)["id"])
    failed = wait_task(stack, admin, other, "failed")
    assert failed["error"]["error"] == "unsupported_type"

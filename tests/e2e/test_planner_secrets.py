"""A user's LLM API key: stored encrypted, sealed only for trusted agents (bound to the task), and found nowhere
else — not in any HTTP response, /ws frame, log line, Redis key or value, task input, event or table."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag

from protocol.envelope import encode_frame
from protocol.messages import Subscribe
from tests.e2e.planner_agent import Answer, TaskIO
from tests.e2e.planner_support import (  # noqa: F401 - fixtures, used by name
    PLAN,
    RAW_TEXT,
    PlannerStack,
    Watcher,
    canned,
    planner_fixture,
    unseal,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

BASE_URL = "http://127.0.0.1:9/v1"
"""Loopback: refused for users unless allow-listed; the stack allow-lists 127.0.0.1:9 (as it would a fake LLM)."""


def _redis_dump(url: str) -> list[tuple[bytes, bytes]]:
    """Every key of the stack's own redis-server with every value in it, whatever its type."""
    client = redis.Redis.from_url(url)
    found: list[tuple[bytes, bytes]] = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            if kind == "string":
                values: list[Any] = [client.get(key)]
            elif kind == "hash":
                values = [b for pair in client.hgetall(key).items() for b in pair]
            elif kind == "list":
                values = client.lrange(key, 0, -1)
            elif kind == "set":
                values = list(client.smembers(key))
            elif kind == "zset":
                values = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                values = [repr(entry).encode() for entry in client.xrange(key)]
            else:
                values = [kind.encode()]
            found.extend((key, v if isinstance(v, bytes) else str(v).encode()) for v in values)
    finally:
        client.close()
    return found


def _database_dump(url: str) -> list[tuple[str, str, Any]]:
    """(table, column, value) of every cell of every table."""
    engine = sa.create_engine(url.replace("+aiosqlite", ""))
    cells: list[tuple[str, str, Any]] = []
    try:
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                result = conn.execute(sa.text(f'SELECT * FROM "{table}"'))
                columns = list(result.keys())
                cells.extend(
                    (table, column, value) for row in result for column, value in zip(columns, row, strict=True)
                )
    finally:
        engine.dispose()
    return cells


def _contains(value: Any, canary: str) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        return canary.encode() in bytes(value)
    return canary in str(value)


def test_api_key_is_sealed_for_trusted_agents_only_and_leaks_nowhere(planner: PlannerStack) -> None:
    stack = planner.stack
    _, token = planner.user()
    canary = f"sk-canary-{secrets.token_hex(16)}"
    with planner.http(token) as client:
        saved = client.put("/api/planner/llm-settings/me", json={"baseUrl": BASE_URL, "apiKey": canary, "model": "m-1"})
        assert saved.status_code == 200, saved.text
        assert saved.json() == {"llmSettings": {"baseUrl": BASE_URL, "model": "m-1", "hasApiKey": True}}
        assert client.get("/api/planner/llm-settings/me").json() == saved.json()

    reply = {"agentName": "planner", "content": "done"}
    planner_answers = canned(plan=PLAN, reply=reply)

    async def handle(submit: Any, io: TaskIO) -> Answer:
        if submit.type == "llm.chat":
            return Answer(output={"message": {"role": "assistant", "content": "hi"}, "finishReason": "stop"})
        answer: Answer = await planner_answers(submit, io)
        return answer

    agent, agent_id = planner.agent(handle, trusted=True)
    frames: list[str] = []
    try:
        with Watcher(stack.api_url, token) as watcher, planner.http(token) as client:
            watcher.socket.send(encode_frame(Subscribe(all=True)).decode())
            created = client.post("/api/planner/tasks/from-text", json={"rawText": RAW_TEXT})
            assert created.status_code == 200, created.text
            session_id = created.json()["session"]["id"]
            answered = client.post(f"/api/planner/sessions/{session_id}/messages", json={"content": "next?"})
            assert answered.status_code == 200, answered.text
            chat = client.post("/api/tasks", json={"type": "llm.chat", "input": {"messages": [{"role": "user"}]}})
            assert chat.status_code == 201, chat.text
            while not any(chat.json()["id"] in f and '"done"' in f for f in frames):
                frames.append(watcher.socket.recv(timeout=30))

        # Untrusted now: the next LLM task reaches the same agent without credentials.
        planner.set_trusted(agent_id, False)
        with planner.http(token) as client:
            assert client.post("/api/planner/tasks/from-text", json={"rawText": RAW_TEXT}).status_code == 200
    finally:
        agent.stop()

    trusted_submits, untrusted_submits = agent.submits[:3], agent.submits[3:]
    assert [s.type for s in trusted_submits] == ["planner.from_text", "planner.reply", "llm.chat"]
    for submit in trusted_submits:
        assert submit.credentials is not None
        assert unseal(submit.credentials, submit.task_id) == {"baseUrl": BASE_URL, "apiKey": canary, "model": "m-1"}
        with pytest.raises(InvalidTag):  # bound to its task: replayed on another task it does not open
            unseal(submit.credentials, trusted_submits[0].task_id if submit is not trusted_submits[0] else "other")
    assert [(s.type, s.credentials) for s in untrusted_submits] == [("planner.from_text", None)]

    redis_cells = _redis_dump(stack.redis_url)
    cells = _database_dump(stack.database_url)
    logs = [proc.log() for proc in stack.procs]
    # The sweep reads what it claims to: the plan's text and title are found where they belong.
    stored_forms = (RAW_TEXT, json.dumps(RAW_TEXT)[1:-1])  # SQLite keeps JSON text, non-ASCII as \u escapes
    assert any(form in str(v) for table, _, v in cells if table == "tasks" for form in stored_forms)
    assert any(RAW_TEXT.encode() in value for _, value in redis_cells)
    assert any(PLAN["title"] in text for text in planner.responses)
    assert any("planner job applied" in log for log in logs)
    assert any('"task/status"' in frame for frame in frames)

    leaks: list[str] = []
    leaks += [f"http: {text[:80]}" for text in planner.responses if canary in text]
    leaks += [f"ws: {frame[:80]}" for frame in frames if canary in frame]
    leaks += [f"log {proc.name}" for proc, log in zip(stack.procs, logs, strict=True) if canary in log]
    leaks += [f"redis {key!r}" for key, value in redis_cells if _contains(key + b" " + value, canary)]
    leaks += [f"db {table}.{column}" for table, column, value in cells if _contains(value, canary)]
    assert leaks == []
    # The one place it lives: the ciphertext column, as ciphertext.
    stored = [v for table, column, v in cells if (table, column) == ("planner_llm_settings", "api_key_enc") and v]
    assert len(stored) == 1

    with planner.http(token) as client:
        assert client.delete("/api/planner/llm-settings/me").status_code == 204
        assert client.get("/api/planner/llm-settings/me").json() == {"llmSettings": None}

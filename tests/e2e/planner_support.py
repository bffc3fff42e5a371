"""Shared pieces of the planner's end-to-end tests (no tests here): a stack whose API knows the test's keys,
seed 002's example plan, users and agents, and a /ws watcher.

Test modules import the `*_fixture` functions (the fixtures keep their short names).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from websockets.sync.client import ClientConnection, connect

from protocol.envelope import encode_frame
from protocol.messages import Subscribe
from tests.conftest import own_database
from tests.e2e.planner_agent import Answer, PlannerAgent, TaskIO
from tests.e2e.stack import Stack

SEAL_KEY = secrets.token_bytes(32)
SECRETS_KEY = secrets.token_bytes(32)
WAIT_S = 20.0
"""The planner's wait bound in the main stack: far above what a canned answer takes, even on a loaded box."""
SHORT_WAIT_S = 1.0
"""The second API's bound, for the 504 tests."""


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unseal(sealed: str, task_id: str, key: bytes = SEAL_KEY) -> dict[str, Any]:
    """The worker's side of the seal, written from docs/planner.md alone (not from the API's code)."""
    assert sealed.startswith("v1.")
    blob = base64.urlsafe_b64decode(sealed[3:] + "=" * (-len(sealed[3:]) % 4))
    plain = AESGCM(key).decrypt(blob[:12], blob[12:], b"taskyard/llm-credentials/v1:" + task_id.encode())
    value: dict[str, Any] = json.loads(plain)
    return value


# Seed 002's example (1.1), as a worker would return it for `planner.from_text`.
RAW_TEXT = "本周完成 AIGC 小论文，先看 10 篇文章，然后写开题..."  # noqa: RUF001 - the seed's own text
PLAN: dict[str, Any] = {
    "title": "完成 AIGC 小论文",
    "description": "根据你提供的文本自动生成的任务描述...",
    "priority": "high",
    "dueAt": "2025-12-15T23:59:00Z",
    "steps": [
        {
            "title": "阅读相关文献",
            "detail": "重点阅读 10 篇 AIGC 相关论文，关注方法和实验设计。",  # noqa: RUF001 - the seed's text
            "estimateMinutes": 240,
        },
        {"title": "撰写初稿", "detail": "", "estimateMinutes": 300},
    ],
}
TASK_KEYS = {"id", "userId", "title", "description", "status", "priority", "dueAt", "createdAt", "updatedAt"}
STEP_KEYS = {
    "id",
    "taskId",
    "orderIndex",
    "title",
    "detail",
    "status",
    "blockingReason",
    "estimateMinutes",
    "plannedStart",
    "plannedEnd",
    "createdAt",
    "updatedAt",
}
SESSION_KEYS = {"id", "userId", "taskId", "type", "createdAt"}
MESSAGE_KEYS = {"id", "sessionId", "role", "agentName", "content", "createdAt"}


def rfc3339(value: Any) -> bool:
    """An RFC 3339 time with an offset (seed 002 §0.3)."""
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        parsed = msgspec.json.decode(json.dumps(value), type=dt.datetime)
    except msgspec.ValidationError:
        return False
    return parsed.tzinfo is not None


@dataclass
class PlannerStack:
    """The e2e stack plus what the planner tests share: a short-bound second API and an HTTP recorder."""

    stack: Stack
    short_api_url: str
    responses: list[str] = field(default_factory=list)

    def http(self, token: str | None = None, *, short: bool = False) -> httpx.Client:
        """A client whose every response body is recorded (the canary sweep reads them)."""

        def record(response: httpx.Response) -> None:
            response.read()
            self.responses.append(f"{response.status_code} {dict(response.headers)} {response.text}")

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        base = self.short_api_url if short else self.stack.api_url
        return httpx.Client(base_url=base, headers=headers, timeout=60, event_hooks={"response": [record]})

    def user(self) -> tuple[str, str]:
        """A new user: (id, access token)."""
        email = f"p-{secrets.token_hex(4)}@example.com"
        token = self.stack.register_user(email)
        with self.http(token) as client:
            return str(client.get("/api/auth/me").json()["id"]), token

    def agent(self, handler: Any, *, trusted: bool = True) -> tuple[PlannerAgent, str]:
        agent_id, token = self.stack.create_agent(capabilities=["llm"], name="planner-agent")
        self.set_trusted(agent_id, trusted)
        return PlannerAgent(self.stack.api_url, agent_id, token, handler).start(), agent_id

    def set_trusted(self, agent_id: str, trusted: bool) -> None:
        with self.http(self.stack.create_admin()) as client:
            response = client.put(f"/api/agents/{agent_id}", json={"trusted": trusted})
            assert response.status_code == 200, response.text
            assert response.json()["trusted"] is trusted


def canned(plan: dict[str, Any] | None = None, reply: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """A handler answering `planner.from_text` with `plan` and `planner.reply` with `reply`."""

    async def handle(submit: Any, io: TaskIO) -> Answer:
        if submit.type == "planner.from_text" and plan is not None:
            return Answer(output=plan)
        if submit.type == "planner.reply" and reply is not None:
            return Answer(output=reply)
        return Answer(error="Unexpected", message=f"no canned answer for {submit.type}")

    return handle


class Watcher:
    """A /ws client socket (role=client) that records every frame it reads; use it as a context manager."""

    def __init__(self, api_url: str, token: str) -> None:
        url = api_url.replace("http://", "ws://") + "/ws?role=client"
        self._connect = connect(url, additional_headers={"Authorization": f"Bearer {token}"})
        self.frames: list[dict[str, Any]] = []

    def __enter__(self) -> Watcher:
        self.socket: ClientConnection = self._connect.__enter__()
        assert self.recv()["type"] == "auth/ok"
        return self

    def __exit__(self, *exc: object) -> None:
        self._connect.__exit__(None, None, None)

    def recv(self, timeout_s: float = 30.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.socket.recv(timeout=timeout_s))
        self.frames.append(frame)
        return frame

    def subscribe_session(self, session_id: int) -> dict[str, Any]:
        self.socket.send(encode_frame(Subscribe(session_id=session_id)).decode())
        return self.recv()


PLANNER_ENV = {
    "TASKYARD_API_PLANNER_WAIT_S": str(WAIT_S),
    "TASKYARD_API_PLANNER_APPLY_INTERVAL_S": "0.3",
    "TASKYARD_API_PLANNER_RECHECK_INTERVAL_S": "1",
    "TASKYARD_API_LLM_SEAL_KEY": b64(SEAL_KEY),
    "TASKYARD_API_SECRETS_KEY": b64(SECRETS_KEY),
    "TASKYARD_API_LLM_BASE_URL_ALLOWLIST": "127.0.0.1:9",
    "TASKYARD_API_LLM_CREDENTIALS_CACHE_S": "0",
    "TASKYARD_API_PROGRESS_RATE_PER_S": "0",
    "TASKYARD_API_LOG_LEVEL": "DEBUG",
}


@pytest.fixture(name="planner", scope="module")
def planner_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlannerStack]:
    """One stack per module: Redis, database, two APIs (normal and 1 s bound), a scheduler."""
    workdir = tmp_path_factory.mktemp("planner-e2e")
    databases = own_database("taskyard_e2e_planner", workdir)
    database_url = next(databases)
    stack = Stack(workdir=workdir, database_url=database_url, extra_env=dict(PLANNER_ENV))
    stack.prefix = f"e2e:{secrets.token_hex(4)}"
    try:
        stack.start_redis()
        stack.migrate()
        stack.start_api()
        # A second replica whose bound is a second: its 504s are stored by the applier of either replica.
        short = stack.start_api(name="api-short", TASKYARD_API_PLANNER_WAIT_S=str(SHORT_WAIT_S))
        stack.start_scheduler()
        yield PlannerStack(stack=stack, short_api_url=short)
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        with contextlib.suppress(StopIteration):
            next(databases)


def wait_for(predicate: Any, timeout_s: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)

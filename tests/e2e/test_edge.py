"""The HTTP edge against a real API process: hostile bodies, security headers, and logs free of credentials."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from websockets.asyncio.client import connect

from protocol.envelope import decode_frame, encode_frame
from protocol.limits import MAX_AGENT_FRAME_BYTES
from protocol.messages import Subscribe
from tests.e2e.stack import ADMIN_PASSWORD, Stack, wait_until

ERROR_KEYS = {"error", "message", "code", "requestId"}
JSON = {"content-type": "application/json"}


def _assert_error_body(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert ERROR_KEYS <= set(body) <= ERROR_KEYS | {"details"}
    assert body["requestId"] == response.headers["x-request-id"]
    return body


def test_hostile_bodies_get_a_4xx_error_body_before_and_after_auth(stack: Stack) -> None:
    token = stack.create_admin()
    deep = b"[" * 50_000 + b"]" * 50_000
    deep_object = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    unbalanced = b"[" * 50_000
    not_utf8 = b'{"email": "\xff\xfe@example.com", "password": "x"}'
    with httpx.Client(base_url=stack.api_url, timeout=60) as client:
        for path, auth in (("/api/auth/login", {}), ("/api/tasks", {"authorization": f"Bearer {token}"})):
            for raw in (deep, deep_object, unbalanced):
                body = _assert_error_body(client.post(path, content=raw, headers={**JSON, **auth}), 400)
                assert body["error"] == "bad_request"
            body = _assert_error_body(client.post(path, content=not_utf8, headers={**JSON, **auth}), 400)
            assert "UTF-8" in body["message"]
            # Strings with brackets in them are not nesting; a depth of 63 is fine, 64 is not.
            ok_depth = b'{"type": "echo", "input": ' + b"[" * 61 + b'"[[[[{{{{"' + b"]" * 61 + b"}"
            too_deep = b'{"type": "echo", "input": ' + b"[" * 63 + b"]" * 63 + b"}"
            if path == "/api/tasks":
                assert client.post(path, content=ok_depth, headers={**JSON, **auth}).status_code == 201
                assert _assert_error_body(client.post(path, content=too_deep, headers={**JSON, **auth}), 400)
        # Strict types: a number sent as a string is refused, naming the field.
        auth = {"authorization": f"Bearer {token}"}
        for field, value in (("priority", "5"), ("maxAttempts", True), ("timeoutSeconds", 1.5)):
            response = client.post("/api/tasks", json={"type": "echo", field: value}, headers=auth)
            assert _assert_error_body(response, 422)["details"]["field"] == field
        # NUL cannot be stored by PostgreSQL: refused at the edge, not a 500 from the database.
        response = client.post("/api/tasks", json={"type": "echo", "input": {"t": "a\u0000b"}}, headers=auth)
        assert _assert_error_body(response, 422)["error"] == "validation_error"
        # ... nor in a query string or a path.
        for url in ("/api/tasks?type=a%00b", "/api/tasks/a%00b"):
            assert _assert_error_body(client.get(url, headers=auth), 400)["error"] == "bad_request"
        # The OpenAPI router's unknown paths answer with the error body, not an HTML page.
        assert _assert_error_body(client.get("/schema/nope"), 404)["error"] == "not_found"
        assert client.get("/schema/openapi.json").status_code == 200
    log = stack.procs[0].log()
    assert "Traceback" not in log
    assert "RecursionError" not in log
    assert "UnicodeDecodeError" not in log
    assert "status=500" not in log


def test_security_headers_and_no_store_on_token_answers(stack: Stack) -> None:
    stack.create_admin()
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        login = client.post("/api/auth/login", json={"email": "admin@example.com", "password": ADMIN_PASSWORD})
        assert login.status_code == 200
        token = login.json()["accessToken"]
        agent = client.post(
            "/api/agents",
            json={"name": "h", "type": "worker", "capabilities": [], "concurrency": 1},
            headers={"authorization": f"Bearer {token}"},
        )
        assert agent.status_code == 201
        assert agent.json()["token"]
        for response in (login, agent, client.get("/healthz"), client.get("/no/such/route")):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
        for response in (login, agent):
            assert response.headers["cache-control"] == "no-store"


def test_no_credential_reaches_any_log_line(stack: Stack) -> None:
    """Login, agent with its token in the query, a task, a watcher with its token in the query: grep every log."""
    admin = stack.create_admin()
    with stack.http() as client:
        login = client.post("/api/auth/login", json={"email": "admin@example.com", "password": ADMIN_PASSWORD}).json()
    access, refresh = login["accessToken"], login["refreshToken"]
    agent_id, agent_token = stack.create_agent(capabilities=["edge"], name="edge")
    worker = stack.start_worker(agent_id, agent_token, TASKYARD_WORKER_TOKEN_IN_QUERY="1")
    task_id = stack.submit(access, type="echo", input={"text": "hi"}, capabilities=["edge"])["id"]
    wait_until(lambda: stack.task(access, task_id)["status"] == "done", timeout_s=45, what="the echo task")

    async def watch() -> str:
        url = stack.api_url.replace("http://", "ws://") + f"/ws?role=client&token={access}"
        async with connect(url) as socket:
            assert decode_frame(await socket.recv(), max_bytes=MAX_AGENT_FRAME_BYTES).type == "auth/ok"
            await socket.send(encode_frame(Subscribe(task_id=task_id)).decode())
            return decode_frame(await asyncio.wait_for(socket.recv(), 10), max_bytes=MAX_AGENT_FRAME_BYTES).type

    assert asyncio.run(watch())
    with stack.http(access) as client:
        assert client.post("/api/auth/refresh", json={"refreshToken": refresh}).status_code == 200
    assert worker.alive()
    stack.stop()  # flush and close every log
    logs = {proc.name: proc.log() for proc in stack.procs}
    api_log = logs["api"]
    # Our access log saw both sockets, without their query strings.
    assert api_log.count("method=WS path=/ws status=101") >= 2, api_log[-3000:]
    assert '"WebSocket' not in api_log
    for secret in (access, refresh, agent_token, ADMIN_PASSWORD, admin):
        for name, text in logs.items():
            assert secret not in text, f"a credential is in the {name} log"

"""The REST calls the bench makes (login, agents, task submission), over httpx."""

from __future__ import annotations

from typing import Any

import httpx

NOOP_TYPE = "noop"


class ApiError(RuntimeError):
    """A REST call answered with an unexpected status; the message carries the body."""


def _check(response: httpx.Response, *expected: int) -> Any:
    if response.status_code not in expected:
        raise ApiError(
            f"{response.request.method} {response.request.url.path} -> {response.status_code}: {response.text[:500]}"
        )
    return response.json() if response.content else None


def _task_ids(body: Any) -> list[str]:
    """Task ids from a batch answer: a list of task views, or an object holding one (`items`/`tasks`)."""
    items = body
    if isinstance(body, dict):
        for key in ("items", "tasks", "created", "results"):
            if isinstance(body.get(key), list):
                items = body[key]
                break
    if not isinstance(items, list):
        raise ApiError(f"unexpected batch answer shape: {str(body)[:300]}")
    ids = []
    for item in items:
        task = item.get("task", item) if isinstance(item, dict) else None
        if not isinstance(task, dict) or "id" not in task:
            raise ApiError(f"batch item without an id: {str(item)[:200]}")
        ids.append(str(task["id"]))
    return ids


class RestClient:
    """One logged-in user's REST session."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(120.0, connect=10.0),
            # Below uvicorn's 5 s keep-alive timeout (see bench.ty.submitter.KEEPALIVE_EXPIRY_S).
            limits=httpx.Limits(keepalive_expiry=2.0),
        )
        self.access_token = ""

    async def aclose(self) -> None:
        await self._http.aclose()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    async def login(self, email: str, password: str) -> None:
        body = _check(await self._http.post("/api/auth/login", json={"email": email, "password": password}), 200)
        self.access_token = body.get("accessToken") or body["access_token"]

    async def register(self, email: str, password: str) -> None:
        """A new (non-admin) account; open registration is the dev default."""
        body = {"email": email, "password": password, "name": email.split("@", maxsplit=1)[0]}
        _check(await self._http.post("/api/auth/register", json=body), 201)

    async def create_agent(
        self, name: str, *, concurrency: int, capabilities: list[str], public: bool = False
    ) -> tuple[str, str]:
        """Returns (agent id, agent token)."""
        payload = {"name": name, "type": "bench", "capabilities": capabilities, "concurrency": concurrency}
        if public:
            payload["isPublic"] = True
        body = _check(await self._http.post("/api/agents", json=payload, headers=self._auth()), 200, 201)
        return str(body["id"]), str(body["token"])

    async def agent_online(self, agent_id: str) -> bool:
        body = _check(await self._http.get(f"/api/agents/{agent_id}", headers=self._auth()), 200)
        return bool(body.get("online"))

    async def submit_batch(
        self, count: int, *, capabilities: list[str] | None = None, type_: str = NOOP_TYPE, input_: Any = None
    ) -> list[str]:
        task = {"type": type_, "input": input_ or {}, "capabilities": capabilities or []}
        response = await self._http.post("/api/tasks/batch", json={"tasks": [task] * count}, headers=self._auth())
        ids = _task_ids(_check(response, 200, 201, 207))
        if len(ids) != count:
            raise ApiError(f"batch of {count} answered {len(ids)} ids")
        return ids

    async def submit_one(self, *, capabilities: list[str] | None = None) -> str:
        task = {"type": NOOP_TYPE, "input": {}, "capabilities": capabilities or []}
        body = _check(await self._http.post("/api/tasks", json=task, headers=self._auth()), 200, 201)
        return str(body["id"])

    async def count(self, status: str) -> int:
        """How many of the caller's tasks have this status (the listing's `total`)."""
        params: dict[str, str | int] = {"status": status, "pageSize": 1}
        body = _check(await self._http.get("/api/tasks", params=params, headers=self._auth()), 200)
        return int(body["total"])

    async def task(self, task_id: str) -> dict[str, Any]:
        """One task with its recorded history (`events`)."""
        body: dict[str, Any] = _check(await self._http.get(f"/api/tasks/{task_id}", headers=self._auth()), 200)
        return body

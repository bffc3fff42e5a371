"""The OpenAPI document tells the truth: the one error body, bearer auth, readable ids, tags, enums."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from protocol.status import TaskStatus
from tests.integration.api.test_auth_flow import CHEAP_ARGON2

ERROR_REF = "#/components/schemas/ErrorBody"


@pytest.fixture
def schema(make_settings: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    with TestClient(app=create_app(make_settings(**CHEAP_ARGON2))) as client:
        response = client.get("/schema/openapi.json")
        assert response.status_code == 200
        yield response.json()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]


def test_every_operation_has_a_readable_unique_id_a_tag_and_a_description(schema: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(schema)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+[A-Z][A-Za-z]+", i) for i in ids), ids
    for path, method, op in _operations(schema):
        assert op["tags"], (method, path)
        assert op["description"].strip(), (method, path)
    used = {tag for _, _, op in _operations(schema) for tag in op["tags"]}
    assert {t["name"] for t in schema["tags"]} >= used


def test_every_error_status_uses_the_one_error_body(schema: dict[str, Any]) -> None:
    body = schema["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"error", "message", "code"}
    assert "validation_error" in body["properties"]["error"]["enum"]
    for path, method, op in _operations(schema):
        errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
        assert errors, (method, path)
        for status, response in errors.items():
            assert response["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, (method, path, status)
    assert "status_code" not in str(schema)  # Litestar's own 400 shape is gone


def test_statuses_follow_the_route(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    submit = set(paths["/api/tasks"]["post"]["responses"])
    assert {"201", "400", "401", "404", "409", "413", "415", "422", "429"} <= submit
    assert "403" not in submit
    assert "200" in submit  # an idempotency key replayed answers 200 with the first task
    assert {"401", "403", "404"} <= set(paths["/api/agents/{agent_id}"]["delete"]["responses"])
    login = paths["/api/auth/login"]["post"]
    assert {"401", "429"} <= set(login["responses"])
    assert "Retry-After" in login["responses"]["429"]["headers"]
    assert "security" not in login
    assert {"502", "504"} <= set(paths["/api/planner/tasks/from-text"]["post"]["responses"])


def test_bearer_scheme_on_guarded_routes_and_task_status_is_an_enum(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A user's access token from `POST /api/auth/login`.",
    }
    assert schema["paths"]["/api/tasks"]["get"]["security"] == [{"bearer": []}]
    (status,) = [p for p in schema["paths"]["/api/tasks"]["get"]["parameters"] if p["name"] == "status"]
    assert status["schema"]["enum"] == [s.value for s in TaskStatus]


def test_task_event_data_is_typed_per_event_type(schema: dict[str, Any]) -> None:
    data = schema["components"]["schemas"]["TaskEventView"]["properties"]["data"]
    shapes = {item.get("title", item.get("type")): item for item in data["anyOf"]}
    assert set(shapes) == {"null", "ProgressEventData", "StreamEventData", "StatusEventData"}
    assert set(shapes["ProgressEventData"]["properties"]) == {"data", "message"}
    assert shapes["StatusEventData"]["required"] == ["reason"]

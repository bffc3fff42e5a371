"""One error body everywhere, request ids in and out, probes, size and media-type limits, CORS, logs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar import get
from litestar.testing import TestClient

from api.app import create_app
from tests.integration.api.test_auth_flow import CHEAP_ARGON2

ERROR_KEYS = {"error", "message", "code", "requestId"}


@pytest.fixture
def app_factory(make_settings: Callable[..., Any]) -> Callable[..., Any]:
    def build(**overrides: object) -> Any:
        return create_app(make_settings(**{**CHEAP_ARGON2, **overrides}))

    return build


@pytest.fixture
def client(app_factory: Callable[..., Any]) -> Iterator[TestClient[Any]]:
    with TestClient(app=app_factory()) as test_client:
        yield test_client


def assert_error(response: Any, status: int, error: str, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert ERROR_KEYS <= set(body) <= ERROR_KEYS | {"details"}
    assert (body["error"], body["code"]) == (error, code)
    assert body["requestId"] == response.headers["x-request-id"]
    return body


def test_unknown_route_is_404_with_the_error_body(client: TestClient[Any]) -> None:
    assert_error(client.get("/no/such/route"), 404, "not_found", 2001)


def test_wrong_method_is_405_with_the_error_body(client: TestClient[Any]) -> None:
    assert_error(client.delete("/api/auth/login"), 405, "method_not_allowed", 2005)


def test_malformed_json_is_400(client: TestClient[Any]) -> None:
    response = client.post("/api/auth/login", content=b'{"email": ', headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_request", 1000)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com", "name": "x"}, "password"),
        ({"email": "not-an-email", "password": "long enough", "name": "x"}, "email"),
        ({"email": "a" * 250 + "@example.com", "password": "long enough", "name": "x"}, "email"),
        ({"email": "a@example.com", "password": "short", "name": "x"}, "password"),
        ({"email": "a@example.com", "password": "p" * 129, "name": "x"}, "password"),
        ({"email": "a@example.com", "password": "long enough", "name": "n" * 201}, "name"),
        ({"email": "a@example.com", "password": "long enough", "name": "x", "role": "admin"}, "role"),
        ({"email": "a@example.com", "password": 12345678, "name": "x"}, "password"),
    ],
)
def test_invalid_register_bodies_are_422_naming_the_field(
    client: TestClient[Any], body: dict[str, Any], field: str
) -> None:
    details = assert_error(client.post("/api/auth/register", json=body), 422, "validation_error", 1001)["details"]
    assert details["field"] == field


def test_wrong_content_type_is_415(client: TestClient[Any]) -> None:
    response = client.post("/api/auth/login", content=b"email=a", headers={"content-type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type", 1006)


def test_body_over_the_limit_is_413(app_factory: Callable[..., Any]) -> None:
    with TestClient(app=app_factory(TASKYARD_API_REQUEST_MAX_BODY_SIZE=1024)) as small:
        response = small.post(
            "/api/auth/login",
            content=b'{"email": "' + b"a" * 4096 + b'"}',
            headers={"content-type": "application/json"},
        )
        assert_error(response, 413, "payload_too_large", 1005)


def test_duplicate_email_is_409(client: TestClient[Any]) -> None:
    body = {"email": "dup-check@example.com", "password": "long enough", "name": "x"}
    first = client.post("/api/auth/register", json=body)
    assert first.status_code in (201, 409)
    assert_error(client.post("/api/auth/register", json=body), 409, "conflict", 2009)


def test_valid_request_id_is_echoed_and_a_bad_one_replaced(client: TestClient[Any]) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "abc.DEF_123-x"})
    assert response.headers["x-request-id"] == "abc.DEF_123-x"
    error = client.get("/nowhere", headers={"X-Request-ID": "trace-42"})
    assert error.headers["x-request-id"] == "trace-42"
    assert error.json()["requestId"] == "trace-42"
    for bad in ("has space", "x" * 129, "semi;colon"):
        replaced = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert replaced != bad
        assert 0 < len(replaced) <= 128


def test_probes(client: TestClient[Any]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_with_redis_down_readyz_is_503_and_login_fails_closed(app_factory: Callable[..., Any]) -> None:
    from tests.conftest import free_port

    with TestClient(app=app_factory(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")) as broken:
        body = assert_error(broken.get("/readyz"), 503, "service_unavailable", 5003)
        assert body["details"] == {"database": "ok", "redis": "unavailable"}
        # No rate limiter means no login (never unlimited), and no 500 either.
        login = broken.post("/api/auth/login", json={"email": "a@example.com", "password": "whatever-pass"})
        assert_error(login, 503, "service_unavailable", 5003)


def test_unexpected_exception_is_500_with_details_hidden(
    app_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("secret internals")

    app = app_factory()
    app.register(boom)
    with TestClient(app=app, raise_server_exceptions=False) as test_client, caplog.at_level(logging.ERROR):
        response = test_client.get("/boom")
        body = assert_error(response, 500, "internal_error", 5000)
        assert "secret internals" not in response.text
        assert body["message"] == "internal error"
        assert test_client.get("/healthz").status_code == 200
    assert any(record.exc_info and "secret internals" in str(record.exc_info[1]) for record in caplog.records)


def test_openapi_schema_is_served(client: TestClient[Any]) -> None:
    schema = client.get("/schema/openapi.json").json()
    assert "/api/auth/login" in schema["paths"]


def test_cors_allows_only_listed_origins(app_factory: Callable[..., Any]) -> None:
    with TestClient(app=app_factory(TASKYARD_API_CORS_ORIGINS="https://app.example")) as cors_client:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = cors_client.options("/api/auth/login", headers={"Origin": "https://app.example", **preflight})
        assert allowed.headers.get("access-control-allow-origin") == "https://app.example"
        denied = cors_client.options("/api/auth/login", headers={"Origin": "https://evil.example", **preflight})
        assert denied.headers.get("access-control-allow-origin") is None


def test_access_log_has_no_query_string_or_token(client: TestClient[Any], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="api.access"):
        client.get("/api/auth/me?token=canary-token-123", headers={"Authorization": "Bearer canary-bearer-456"})
    lines = [r.getMessage() for r in caplog.records if r.name == "api.access"]
    assert any("path=/api/auth/me " in line and "status=401" in line and "latency_ms=" in line for line in lines)
    assert not any("canary" in line or "token=" in line for line in lines)

"""The JWT negative matrix: every bad token gets the same 401 body and never reaches a handler."""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from litestar.testing import TestClient

from api.app import create_app
from tests.conftest import TEST_JWT_SECRET
from tests.integration.api.test_auth_flow import CHEAP_ARGON2, bearer, login, register, unique_email


@pytest.fixture
def client(make_settings: Callable[..., Any]) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(make_settings(**CHEAP_ARGON2))) as test_client:
        yield test_client


@pytest.fixture
def session(client: TestClient[Any]) -> dict[str, Any]:
    """A logged-in user: its tokens and the claims of its access token."""
    email = unique_email()
    register(client, email)
    tokens = login(client, email)
    claims = jwt.decode(tokens["accessToken"], options={"verify_signature": False})
    return {"tokens": tokens, "claims": claims}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forge(claims: dict[str, Any], *, key: str = TEST_JWT_SECRET, algorithm: str = "HS256", **headers: Any) -> str:
    with warnings.catch_warnings():
        # The server's key is short for HS512; that is the point of the case, not a test problem.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm, headers=headers or None)


def _variants(claims: dict[str, Any], refresh_token: str) -> dict[str, str]:
    now = int(time.time())
    without = {name: {k: v for k, v in claims.items() if k != name} for name in ("exp", "jti", "aud", "iss", "typ")}
    return {
        "alg none": _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(claims) + ".",
        "HS512 instead of HS256": _forge(claims, algorithm="HS512"),
        "another key": _forge(claims, key="another-key-" + "k" * 40),
        "altered payload": (
            lambda t: t.split(".")[0] + "." + _b64({**claims, "sub": "someone-else"}) + "." + t.split(".")[2]
        )(_forge(claims)),
        "expired": _forge({**claims, "exp": now - 120, "iat": now - 300, "nbf": now - 300}),
        "nbf in the future": _forge({**claims, "nbf": now + 600}),
        "iat in the future": _forge({**claims, "iat": now + 600}),
        "wrong audience": _forge({**claims, "aud": "someone-else"}),
        "wrong issuer": _forge({**claims, "iss": "someone-else"}),
        "not an access token": _forge({**claims, "typ": "refresh"}),
        "jwk header pointing elsewhere": _forge(claims, key="attacker-" + "k" * 40, jwk={"kty": "oct", "k": "QQ"}),
        "refresh token as access token": refresh_token,
        "garbage": "not-a-jwt",
        "10 KB bearer": "a" * 10_240,
        **{f"missing {name}": _forge(value) for name, value in without.items()},
    }


def test_every_bad_access_token_gets_one_401_body(client: TestClient[Any], session: dict[str, Any]) -> None:
    claims, tokens = session["claims"], session["tokens"]
    assert client.get("/api/auth/me", headers=bearer(_forge(claims))).status_code == 200  # the forge is faithful

    bodies = set()
    for case, token in _variants(claims, tokens["refreshToken"]).items():
        response = client.get("/api/auth/me", headers=bearer(token))
        assert response.status_code == 401, case
        body = response.json()
        assert body.pop("requestId") == response.headers["x-request-id"], case
        bodies.add(json.dumps(body, sort_keys=True))
    assert len(bodies) == 1
    assert json.loads(bodies.pop()) == {"error": "unauthorized", "message": "authentication required", "code": 1002}


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"])
def test_malformed_authorization_headers_get_401(client: TestClient[Any], header: str) -> None:
    response = client.get("/api/auth/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_access_token_is_not_a_refresh_token(client: TestClient[Any], session: dict[str, Any]) -> None:
    response = client.post("/api/auth/refresh", json={"refreshToken": session["tokens"]["accessToken"]})
    assert response.status_code == 401


def test_issued_token_pins_hs256_and_carries_the_required_claims(session: dict[str, Any]) -> None:
    header = jwt.get_unverified_header(session["tokens"]["accessToken"])
    assert header["alg"] == "HS256"
    assert {"exp", "iat", "nbf", "jti", "aud", "iss", "sub", "typ", "roles"} <= set(session["claims"])
    assert session["claims"]["typ"] == "access"
    assert session["claims"]["roles"] == ["user"]

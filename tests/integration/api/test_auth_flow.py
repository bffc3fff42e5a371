"""Auth through the real app: register, login, me, refresh rotation, logout, reuse detection, audit.

Real Redis and PostgreSQL when present (else the embedded Redis and SQLite), via tests/conftest.py.
argon2 runs with cheap parameters here, except in the one test that checks the production ones.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from litestar.testing import TestClient

from api.app import create_app
from api.auth.keys import revoked_token_key
from scheduler.keys import Keys

CHEAP_ARGON2 = {
    "TASKYARD_API_ARGON2_TIME_COST": 1,
    "TASKYARD_API_ARGON2_MEMORY_COST_KIB": 8,
    "TASKYARD_API_ARGON2_PARALLELISM": 1,
}
PASSWORD = "correct horse battery"


def sync_url(async_url: str) -> str:
    return async_url.replace("+aiosqlite", "")


@pytest.fixture
def build_client(make_settings: Callable[..., Any]) -> Iterator[Callable[..., TestClient[Any]]]:
    """`build_client(**env_overrides)` -> an entered TestClient around a fresh app (cheap argon2)."""
    clients: list[TestClient[Any]] = []

    def build(**overrides: object) -> TestClient[Any]:
        client: TestClient[Any] = TestClient(app=create_app(make_settings(**{**CHEAP_ARGON2, **overrides})))
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(build_client: Callable[..., TestClient[Any]]) -> TestClient[Any]:
    return build_client()


@pytest.fixture
def db(make_settings: Callable[..., Any]) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sync_url(make_settings().database.url.reveal()))
    yield engine
    engine.dispose()


def unique_email() -> str:
    import secrets

    return f"user-{secrets.token_hex(5)}@example.com"


def register(client: TestClient[Any], email: str, password: str = PASSWORD, name: str = "Ada") -> str:
    response = client.post("/api/auth/register", json={"email": email, "password": password, "name": name})
    assert response.status_code == 201, response.text
    user_id: str = response.json()["userId"]
    return user_id


def login(client: TestClient[Any], email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "unauthorized"
    assert body["code"] == 1002
    assert body["requestId"] == response.headers["x-request-id"]


def audit_actions(db: sa.Engine, user_id: str) -> list[tuple[str, str]]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT action, outcome FROM audit_log WHERE actor_id = :u OR target_id = :u ORDER BY id"),
            {"u": user_id},
        ).all()
    return [(r[0], r[1]) for r in rows]


def test_full_flow_register_login_me_refresh_logout(client: TestClient[Any], db: sa.Engine) -> None:
    email = unique_email()
    user_id = register(client, email.upper(), name="Ada Lovelace")

    tokens = login(client, email)
    assert tokens["tokenType"] == "Bearer"
    assert tokens["expiresIn"] > 0
    me = client.get("/api/auth/me", headers=bearer(tokens["accessToken"]))
    assert me.status_code == 200
    assert me.json() == {"id": user_id, "email": email, "name": "Ada Lovelace", "roles": ["user"]}

    rotated = client.post("/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()
    assert set(fresh) == {"accessToken", "expiresIn", "refreshToken"}
    assert fresh["refreshToken"] != tokens["refreshToken"]
    assert client.get("/api/auth/me", headers=bearer(fresh["accessToken"])).status_code == 200

    out = client.post(
        "/api/auth/logout", headers=bearer(fresh["accessToken"]), json={"refreshToken": fresh["refreshToken"]}
    )
    assert out.status_code == 200
    assert out.json() == {}

    assert_unauthorized(client.get("/api/auth/me", headers=bearer(fresh["accessToken"])))
    # The session ended: the access token minted before the rotation is refused too.
    assert_unauthorized(client.get("/api/auth/me", headers=bearer(tokens["accessToken"])))
    assert_unauthorized(client.post("/api/auth/refresh", json={"refreshToken": fresh["refreshToken"]}))
    assert_unauthorized(client.post("/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]}))

    actions = audit_actions(db, user_id)
    assert ("register", "success") in actions
    assert ("login", "success") in actions
    assert ("logout", "success") in actions


def test_logout_without_body_revokes_the_session(client: TestClient[Any]) -> None:
    email = unique_email()
    register(client, email)
    tokens = login(client, email)
    assert client.post("/api/auth/logout", headers=bearer(tokens["accessToken"])).status_code == 200
    assert_unauthorized(client.post("/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]}))


def test_wrong_password_and_unknown_email_get_the_same_answer(client: TestClient[Any], db: sa.Engine) -> None:
    email = unique_email()
    user_id = register(client, email)
    wrong = client.post("/api/auth/login", json={"email": email, "password": "not the password"})
    unknown = client.post("/api/auth/login", json={"email": unique_email(), "password": "not the password"})
    assert_unauthorized(wrong)
    assert_unauthorized(unknown)

    def strip(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "requestId"}

    assert strip(wrong.json()) == strip(unknown.json())
    assert ("login", "failure") in audit_actions(db, user_id)


def test_reused_refresh_token_kills_the_family_and_is_audited(client: TestClient[Any], db: sa.Engine) -> None:
    email = unique_email()
    user_id = register(client, email)
    first = login(client, email)
    second = client.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]}).json()

    assert_unauthorized(client.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]}))
    # The legitimate successor is dead too, and so are the access tokens of that session.
    assert_unauthorized(client.post("/api/auth/refresh", json={"refreshToken": second["refreshToken"]}))
    assert_unauthorized(client.get("/api/auth/me", headers=bearer(second["accessToken"])))
    assert ("refresh_token_reuse", "denied") in audit_actions(db, user_id)
    # Another login starts a new family that works.
    assert client.get("/api/auth/me", headers=bearer(login(client, email)["accessToken"])).status_code == 200


def test_two_concurrent_refreshes_exactly_one_wins(client: TestClient[Any]) -> None:
    email = unique_email()
    register(client, email)
    refresh_token = login(client, email)["refreshToken"]
    start = threading.Barrier(4)

    def attempt(_: int) -> int:
        start.wait(timeout=10)
        status: int = client.post("/api/auth/refresh", json={"refreshToken": refresh_token}).status_code
        return status

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(attempt, range(4)))
    assert sorted(statuses) == [200, 401, 401, 401]


def test_logout_survives_a_redis_wipe(client: TestClient[Any], redis_url: str, redis_prefix: str) -> None:
    email = unique_email()
    register(client, email)
    tokens = login(client, email)
    sync_redis = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        pubsub = sync_redis.pubsub()
        pubsub.subscribe(Keys(redis_prefix).control_channel())
        pubsub.get_message(timeout=5)  # the subscribe confirmation

        assert client.post("/api/auth/logout", headers=bearer(tokens["accessToken"])).status_code == 200

        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None
        announced = json.loads(message["data"])
        assert announced["kind"] == "token_revoked"
        cache_key = revoked_token_key(redis_prefix, announced["id"])
        assert 0 < sync_redis.ttl(cache_key) <= 900 + 60
        pubsub.close()

        keys = list(sync_redis.scan_iter(match=f"{redis_prefix}*", count=1000))
        assert keys
        sync_redis.delete(*keys)
        assert not sync_redis.exists(cache_key)
    finally:
        sync_redis.close()
    assert_unauthorized(client.get("/api/auth/me", headers=bearer(tokens["accessToken"])))


def test_a_revocation_redis_lost_applies_on_other_replicas_within_the_cache_bound(
    build_client: Callable[..., TestClient[Any]], redis_url: str, redis_prefix: str
) -> None:
    replica = build_client(TASKYARD_API_USER_CACHE_TTL_S=1)
    other = build_client(TASKYARD_API_USER_CACHE_TTL_S=1)
    email = unique_email()
    register(replica, email)
    token = login(replica, email)["accessToken"]
    assert other.get("/api/auth/me", headers=bearer(token)).status_code == 200  # cached there
    assert replica.post("/api/auth/logout", headers=bearer(token)).status_code == 200
    sync_redis = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(sync_redis.scan_iter(match=f"{redis_prefix}*", count=1000))
        sync_redis.delete(*keys)  # Redis lost the revocation: only the database still has it
    finally:
        sync_redis.close()
    _until(lambda: other.get("/api/auth/me", headers=bearer(token)).status_code == 401, 1)


def test_deactivated_and_deleted_users_tokens_are_refused(client: TestClient[Any], db: sa.Engine) -> None:
    inactive_email, deleted_email = unique_email(), unique_email()
    inactive_id = register(client, inactive_email)
    deleted_id = register(client, deleted_email)
    inactive_token = login(client, inactive_email)["accessToken"]
    deleted_token = login(client, deleted_email)["accessToken"]
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE users SET is_active = false WHERE id = :u"), {"u": inactive_id})
        conn.execute(sa.text("DELETE FROM refresh_tokens WHERE user_id = :u"), {"u": deleted_id})
        conn.execute(sa.text("DELETE FROM users WHERE id = :u"), {"u": deleted_id})
    assert_unauthorized(client.get("/api/auth/me", headers=bearer(inactive_token)))
    assert_unauthorized(client.get("/api/auth/me", headers=bearer(deleted_token)))
    assert_unauthorized(client.post("/api/auth/login", json={"email": inactive_email, "password": PASSWORD}))


def test_prod_registration_is_for_admins_only(build_client: Callable[..., TestClient[Any]], db: sa.Engine) -> None:
    prod = build_client(APP_ENV="prod", JWT_SECRET="p" * 48)
    anonymous = prod.post("/api/auth/register", json={"email": unique_email(), "password": PASSWORD, "name": "x"})
    assert anonymous.status_code == 403
    assert anonymous.json()["error"] == "forbidden"

    # Bootstrap an admin the way the CLI does (a user row with role admin), through a dev app on the same DB.
    dev = build_client()
    admin_email, user_email = unique_email(), unique_email()
    admin_id = register(dev, admin_email)
    user_id = register(dev, user_email)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE users SET role = 'admin' WHERE id = :u"), {"u": admin_id})
    del user_id

    as_user = prod.post(
        "/api/auth/register",
        headers=bearer(login(prod, user_email)["accessToken"]),
        json={"email": unique_email(), "password": PASSWORD, "name": "x"},
    )
    assert as_user.status_code == 403
    admin_token = login(prod, admin_email)["accessToken"]
    assert prod.get("/api/auth/me", headers=bearer(admin_token)).json()["roles"] == ["admin"]
    created = prod.post(
        "/api/auth/register",
        headers=bearer(admin_token),
        json={"email": unique_email(), "password": PASSWORD, "name": "x"},
    )
    assert created.status_code == 201


def test_production_argon2_parameters_are_used_by_default(make_settings: Callable[..., Any], db: sa.Engine) -> None:
    email = unique_email()
    with TestClient(app=create_app(make_settings())) as real:
        user_id = register(real, email)
        login(real, email)
    with db.connect() as conn:
        stored = conn.execute(sa.text("SELECT password_hash FROM users WHERE id = :u"), {"u": user_id}).scalar_one()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in stored


def test_refresh_past_the_family_lifetime_is_refused(client: TestClient[Any], db: sa.Engine) -> None:
    email = unique_email()
    user_id = register(client, email)
    tokens = login(client, email)
    with db.begin() as conn:
        conn.execute(
            sa.text("UPDATE refresh_tokens SET family_expires_at = :past WHERE user_id = :u"),
            {"past": "2000-01-01T00:00:00+00:00", "u": user_id},
        )
    assert_unauthorized(client.post("/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]}))


def test_role_and_token_version_are_read_on_every_request(
    build_client: Callable[..., TestClient[Any]], db: sa.Engine
) -> None:
    # With the user cache off, every request reads the user row.
    client = build_client(TASKYARD_API_USER_CACHE_TTL_S=0)
    email = unique_email()
    user_id = register(client, email)
    token = login(client, email)["accessToken"]
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE users SET role = 'admin' WHERE id = :u"), {"u": user_id})
    assert client.get("/api/auth/me", headers=bearer(token)).json()["roles"] == ["admin"]
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE users SET role = 'user' WHERE id = :u"), {"u": user_id})
    assert client.get("/api/auth/me", headers=bearer(token)).json()["roles"] == ["user"]
    # Bumping the token version (password change, forced sign-out) ends every outstanding token.
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE users SET token_version = token_version + 1 WHERE id = :u"), {"u": user_id})
    assert_unauthorized(client.get("/api/auth/me", headers=bearer(token)))


def _until(check: Callable[[], bool], bound_s: float) -> float:
    """Seconds until `check()` held; fails past the bound plus a margin for a slow box."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < bound_s + 5, "not applied within the documented bound"
        time.sleep(0.1)
    return time.monotonic() - start


def test_database_only_changes_apply_within_the_cache_bound(
    build_client: Callable[..., TestClient[Any]], db: sa.Engine
) -> None:
    """With the cache on (1 s), a change only the database knows applies within the bound, not never."""
    client = build_client(TASKYARD_API_USER_CACHE_TTL_S=1)
    email = unique_email()
    user_id = register(client, email)
    token = login(client, email)["accessToken"]
    assert client.get("/api/auth/me", headers=bearer(token)).json()["roles"] == ["user"]  # now cached
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE users SET role = 'admin' WHERE id = :u"), {"u": user_id})
    _until(lambda: client.get("/api/auth/me", headers=bearer(token)).json()["roles"] == ["admin"], 1)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE users SET token_version = token_version + 1 WHERE id = :u"), {"u": user_id})
    _until(lambda: client.get("/api/auth/me", headers=bearer(token)).status_code == 401, 1)


def test_logout_and_reuse_apply_at_once_on_every_replica_despite_the_cache(
    build_client: Callable[..., TestClient[Any]],
) -> None:
    """Revocations go through Redis: another replica with a long cache refuses the token on the next request."""
    replica = build_client(TASKYARD_API_USER_CACHE_TTL_S=300)
    other = build_client(TASKYARD_API_USER_CACHE_TTL_S=300)
    email = unique_email()
    register(replica, email)
    tokens = login(replica, email)
    assert other.get("/api/auth/me", headers=bearer(tokens["accessToken"])).status_code == 200  # cached there
    assert replica.post("/api/auth/logout", headers=bearer(tokens["accessToken"])).status_code == 200
    assert_unauthorized(other.get("/api/auth/me", headers=bearer(tokens["accessToken"])))
    assert_unauthorized(replica.get("/api/auth/me", headers=bearer(tokens["accessToken"])))

    # Refresh-token reuse revokes the session: its access tokens are refused at once, cached or not.
    first = login(replica, email)
    second = replica.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]}).json()
    assert other.get("/api/auth/me", headers=bearer(second["accessToken"])).status_code == 200  # cached there
    assert_unauthorized(replica.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]}))
    assert_unauthorized(other.get("/api/auth/me", headers=bearer(second["accessToken"])))


def test_logout_purges_denylist_rows_whose_tokens_expired(client: TestClient[Any], db: sa.Engine) -> None:
    email = unique_email()
    user_id = register(client, email)
    with db.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (:j, :u, :at)"),
            {"j": "long-expired-jti", "u": user_id, "at": "2000-01-01T00:00:00+00:00"},
        )
    token = login(client, email)["accessToken"]
    assert client.post("/api/auth/logout", headers=bearer(token)).status_code == 200
    with db.connect() as conn:
        jtis = conn.execute(sa.text("SELECT jti FROM revoked_tokens WHERE user_id = :u"), {"u": user_id}).scalars()
        remaining = set(jtis)
    assert "long-expired-jti" not in remaining
    assert len(remaining) == 1  # the token just logged out stays denied until it expires
    assert_unauthorized(client.get("/api/auth/me", headers=bearer(token)))

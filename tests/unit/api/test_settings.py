"""load_settings: env names, YAML file with env winning, prod secret refusal, masked secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from api.settings import MIN_JWT_SECRET_BYTES, Secret, SettingsError, load_settings

GOOD_SECRET = "s" * MIN_JWT_SECRET_BYTES


def test_defaults_run_the_embedded_dev_stack(tmp_path: Path) -> None:
    settings = load_settings({"TASKYARD_DATA_DIR": str(tmp_path)})
    assert settings.env == "dev"
    assert settings.database.url.reveal() == f"sqlite+aiosqlite:///{(tmp_path / 'taskyard.db').resolve()}"
    assert settings.redis.url is None
    assert settings.redis.prefix == "taskyard"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8000)
    assert settings.open_registration is True


def test_dev_secret_is_persisted_in_the_data_dir_so_restarts_keep_sessions(tmp_path: Path) -> None:
    first = load_settings({"TASKYARD_DATA_DIR": str(tmp_path)})
    second = load_settings({"TASKYARD_DATA_DIR": str(tmp_path)})
    assert len(first.auth.jwt_secret.reveal()) >= MIN_JWT_SECRET_BYTES
    assert first.auth.jwt_secret == second.auth.jwt_secret
    secret_file = tmp_path / "jwt-secret"
    assert secret_file.read_text() == first.auth.jwt_secret.reveal()
    assert secret_file.stat().st_mode & 0o077 == 0


def test_env_names_reach_their_fields(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "TASKYARD_DATA_DIR": str(tmp_path),
            "HTTP_ADDR": "0.0.0.0:9000",
            "DATABASE_URL": "postgresql+psycopg://u@h/db",
            "REDIS_URL": "redis://r:6379/1",
            "TASKYARD_REDIS_PREFIX": "p1",
            "TASKYARD_API_ACCESS_TOKEN_TTL_S": "60",
            "TASKYARD_API_HEARTBEAT_INTERVAL_S": "0.5",
            "TASKYARD_API_CORS_ORIGINS": "https://a.example, https://b.example",
            "TASKYARD_API_TRUSTED_PROXIES": "10.0.0.1, 10.244.0.0/16",
        }
    )
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 9000)
    assert settings.database.url.reveal() == "postgresql+psycopg://u@h/db"
    assert settings.redis.url == Secret("redis://r:6379/1")
    assert settings.redis.prefix == "p1"
    assert settings.auth.access_token_ttl_s == 60
    assert settings.ws.heartbeat_interval_s == 0.5
    assert settings.http.cors_origins == ("https://a.example", "https://b.example")
    assert settings.http.trusted_proxies == ("10.0.0.1", "10.244.0.0/16")


def test_trusted_proxies_default_to_none_and_refuse_junk_and_the_old_switch(tmp_path: Path) -> None:
    assert load_settings({"TASKYARD_DATA_DIR": str(tmp_path)}).http.trusted_proxies == ()
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "TASKYARD_DATA_DIR": str(tmp_path),
                "TASKYARD_API_TRUSTED_PROXIES": "*",
                "TASKYARD_API_TRUST_FORWARDED_FOR": "true",
            }
        )
    problems = "\n".join(caught.value.problems)
    assert "TASKYARD_API_TRUSTED_PROXIES: '*' is not an IP address or network" in problems
    assert "TASKYARD_API_TRUST_FORWARDED_FOR: removed" in problems


def test_yaml_file_is_read_and_env_wins(tmp_path: Path) -> None:
    config = tmp_path / "taskyard.yaml"
    config.write_text(
        "auth:\n  access_token_ttl_s: 120\n  refresh_token_ttl_s: 3600\nredis:\n  prefix: fromfile\n"
        "scheduler:\n  assign_timeout_s: 7\n"
    )
    settings = load_settings(
        {
            "TASKYARD_DATA_DIR": str(tmp_path),
            "TASKYARD_CONFIG": str(config),
            "TASKYARD_API_ACCESS_TOKEN_TTL_S": "30",
        }
    )
    assert settings.auth.access_token_ttl_s == 30
    assert settings.auth.refresh_token_ttl_s == 3600
    assert settings.redis.prefix == "fromfile"
    # The scheduler settings the API uses come from the same file, as the scheduler's own do.
    assert (settings.scheduler.prefix, settings.scheduler.assign_timeout_s) == ("fromfile", 7.0)


@pytest.mark.parametrize(
    ("secret", "why"),
    [(None, "required"), ("short-secret", "at least 32 bytes"), ("changeme", "well-known default")],
)
def test_prod_refuses_a_missing_short_or_default_jwt_secret(tmp_path: Path, secret: str | None, why: str) -> None:
    environ = {"APP_ENV": "prod", "TASKYARD_DATA_DIR": str(tmp_path)}
    if secret is not None:
        environ["JWT_SECRET"] = secret
    with pytest.raises(SettingsError) as info:
        load_settings(environ)
    assert any(p.startswith("JWT_SECRET:") and why in p for p in info.value.problems)
    assert not (tmp_path / "jwt-secret").exists()


def test_every_bad_variable_is_listed_at_once(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                "APP_ENV": "prod",
                "TASKYARD_DATA_DIR": str(tmp_path),
                "JWT_SECRET": "x",
                "TASKYARD_API_ACCESS_TOKEN_TTL_S": "soon",
                "HTTP_ADDR": "nowhere",
            }
        )
    names = sorted(p.split(":")[0] for p in info.value.problems)
    assert names == ["HTTP_ADDR", "JWT_SECRET", "TASKYARD_API_ACCESS_TOKEN_TTL_S"]


def test_prod_accepts_a_strong_secret_and_closes_registration(tmp_path: Path) -> None:
    settings = load_settings({"APP_ENV": "prod", "JWT_SECRET": GOOD_SECRET, "TASKYARD_DATA_DIR": str(tmp_path)})
    assert settings.is_prod
    assert settings.open_registration is False


def test_repr_of_loaded_settings_shows_no_secret(tmp_path: Path) -> None:
    jwt_secret = "jwt-canary-" + os.urandom(16).hex()
    db_password = "db-canary-" + os.urandom(8).hex()
    settings = load_settings(
        {
            "APP_ENV": "prod",
            "TASKYARD_DATA_DIR": str(tmp_path),
            "JWT_SECRET": jwt_secret,
            "DATABASE_URL": f"postgresql+psycopg://app:{db_password}@db/taskyard",
            "REDIS_URL": f"redis://:{db_password}@r:6379/0",
        }
    )
    text = repr(settings) + str(settings)
    assert jwt_secret not in text
    assert db_password not in text
    assert "**********" in text
    assert str(settings.auth.jwt_secret) == "**********"
    assert settings.auth.jwt_secret.reveal() == jwt_secret


def test_every_setting_has_a_distinct_env_name_and_a_docstring() -> None:
    from api.settings import settings_reference

    rows = [line for line in settings_reference().splitlines()[2:] if line.strip()]
    names = [row.split("|")[1].strip() for row in rows]
    assert len(names) == len(set(names))
    assert all(row.split("|")[3].strip() for row in rows)


def test_ops_settings_are_read_and_checked(tmp_path: Path) -> None:
    from api.settings import SettingsError, load_settings

    settings = load_settings(
        {
            "TASKYARD_DATA_DIR": str(tmp_path),
            "TASKYARD_API_RETENTION_TASKS_DAYS": "3",
            "TASKYARD_API_WEBHOOK_ALLOWLIST": "10.0.0.0/8, hooks.internal:8443",
        }
    )
    assert settings.ops.retention_tasks_days == 3
    assert settings.ops.webhook_allowlist == ("10.0.0.0/8", "hooks.internal:8443")
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                "TASKYARD_DATA_DIR": str(tmp_path),
                "TASKYARD_API_RETENTION_BATCH_SIZE": "0",
                "TASKYARD_API_PURGE_INTERVAL_S": "-1",
                "TASKYARD_API_JOBS_QUEUE": "a b",
            }
        )
    text = "\n".join(info.value.problems)
    assert "TASKYARD_API_RETENTION_BATCH_SIZE" in text
    assert "TASKYARD_API_PURGE_INTERVAL_S" in text
    assert "TASKYARD_API_JOBS_QUEUE" in text


def test_a_bad_config_file_and_bad_file_values_are_listed_with_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "taskyard.yaml"
    config.write_text("auth:\n  access_token_ttl_s: soon\n  no_such_field: 1\nops: [1]\n")
    with pytest.raises(SettingsError) as info:
        load_settings(
            {"TASKYARD_DATA_DIR": str(tmp_path), "TASKYARD_CONFIG": str(config), "TASKYARD_API_WEBHOOK_TIMEOUT_S": "0"}
        )
    assert info.value.problems == [
        "TASKYARD_CONFIG: unknown field auth.no_such_field",
        "TASKYARD_CONFIG auth.access_token_ttl_s: expected an integer",
        "TASKYARD_CONFIG: section 'ops' must be a mapping",
        "TASKYARD_API_WEBHOOK_TIMEOUT_S: must be above 0",
    ]
    with pytest.raises(SettingsError, match="TASKYARD_CONFIG: cannot read"):
        load_settings({"TASKYARD_DATA_DIR": str(tmp_path), "TASKYARD_CONFIG": str(tmp_path / "missing.yaml")})


def test_blank_variables_count_as_unset(tmp_path: Path) -> None:
    settings = load_settings(
        {"TASKYARD_DATA_DIR": str(tmp_path), "APP_ENV": "", "REDIS_URL": "", "TASKYARD_API_ACCESS_TOKEN_TTL_S": " "}
    )
    assert (settings.env, settings.redis.url, settings.auth.access_token_ttl_s) == ("dev", None, 900)


def test_api_processes_above_one_need_postgresql(tmp_path: Path) -> None:
    assert load_settings({"TASKYARD_DATA_DIR": str(tmp_path)}).http.processes == 1
    postgres = {"TASKYARD_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgresql+psycopg://u@h/db"}
    assert load_settings({**postgres, "TASKYARD_API_PROCESSES": "4"}).http.processes == 4
    with pytest.raises(SettingsError) as refused:
        load_settings({"TASKYARD_DATA_DIR": str(tmp_path), "TASKYARD_API_PROCESSES": "2"})
    assert "TASKYARD_API_PROCESSES: above 1 needs PostgreSQL" in str(refused.value)
    with pytest.raises(SettingsError) as zero:
        load_settings({**postgres, "TASKYARD_API_PROCESSES": "0"})
    assert "TASKYARD_API_PROCESSES" in str(zero.value)

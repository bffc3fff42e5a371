"""`load_settings`: the API's settings from a mapping (the environment) plus the optional YAML file it names.

Nothing here runs at import time; entry points and tests call `load_settings(environ)` with a plain mapping.
Environment names: `APP_ENV`, `HTTP_ADDR`, `JWT_SECRET`, `DATABASE_URL`, `REDIS_URL`, `TASKYARD_CONFIG`,
`TASKYARD_REDIS_PREFIX`, `TASKYARD_DATA_DIR`, and `TASKYARD_API_<FIELD>` for every other field (for example
`TASKYARD_API_ACCESS_TOKEN_TTL_S`). The YAML file holds the same fields grouped by section
(`auth: {access_token_ttl_s: 900}`); the environment wins over the file; a blank variable counts as unset.
Conversion and bounds are `protocol.config`'s; what is checked here spans fields or depends on `APP_ENV`.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from api.settings.groups import GROUPS, ApiSettings, DatabaseSettings, HttpSettings, env_name
from api.settings.keys import dev_jwt_secret, jwt_secret_problem, planner_keys
from protocol.config import Secret, load_group
from scheduler.errors import SchedulerSettingsError
from scheduler.settings import SchedulerSettings, read_config_file
from scheduler.settings import load_settings as load_scheduler_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("SettingsError", "load_settings")


class SettingsError(ValueError):
    """Bad configuration; `problems` lists every bad variable, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings: " + "; ".join(problems))


def _check_jobs_queue(name: str) -> str:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError("letters, digits, '-' and '_' only")
    return name


def _check_proxies(proxies: tuple[str, ...]) -> tuple[str, ...]:
    for entry in proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return proxies


_CHECKS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "http": {"trusted_proxies": _check_proxies},
    "ops": {"jobs_queue": _check_jobs_queue},
}


def _parse_addr(raw: str, problems: list[str]) -> tuple[str, int] | None:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        problems.append("HTTP_ADDR: expected host:port, e.g. 127.0.0.1:8000")
        return None
    return host.strip("[]"), int(port)


def _top(environ: Mapping[str, str], file_data: Mapping[str, Any], var: str, key: str, default: str) -> str:
    return environ.get(var, "").strip() or str(file_data.get(key, default))


def _load_groups(environ: Mapping[str, str], file_data: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """Every group, from its variables and its file section."""
    groups: dict[str, Any] = {}
    for group, cls in GROUPS.items():
        section = file_data.get(group) or {}
        if not isinstance(section, dict):
            problems.append(f"TASKYARD_CONFIG: section {group!r} must be a mapping")
            section = {}
        groups[group] = load_group(
            cls,
            environ,
            problems,
            env_name=functools.partial(env_name, group),
            section=section,
            section_name=group,
            checks=_CHECKS.get(group),
        )

    return groups


def _database(database: DatabaseSettings, data_dir: Path, http: HttpSettings, problems: list[str]) -> DatabaseSettings:
    """The database settings, defaulting to a SQLite file in the data dir."""
    if not database.url:
        db_url = f"sqlite+aiosqlite:///{(data_dir / 'taskyard.db').resolve()}"
        database = dataclasses.replace(database, url=Secret(db_url))
    if http.processes > 1 and database.url.reveal().startswith("sqlite"):
        # Several writers on one SQLite file queue on its lock: slower than one process, and busy errors under load.
        problems.append(f"{env_name('http', 'processes')}: above 1 needs PostgreSQL (DATABASE_URL is SQLite)")
    return database


def load_settings(environ: Mapping[str, str]) -> ApiSettings:
    """Build the settings from `environ` (and the YAML file it names); raise `SettingsError` listing every problem."""
    problems: list[str] = []
    file_data: dict[str, Any] = {}
    if environ.get("TASKYARD_CONFIG", "").strip():
        file_data = read_config_file(environ["TASKYARD_CONFIG"].strip(), problems)

    env_raw = _top(environ, file_data, "APP_ENV", "env", "dev").lower()
    if env_raw not in ("dev", "prod"):
        problems.append("APP_ENV: must be dev or prod")
    env: Literal["dev", "prod"] = "prod" if env_raw == "prod" else "dev"
    data_dir = Path(_top(environ, file_data, "TASKYARD_DATA_DIR", "data_dir", ".taskyard"))
    log_level = _top(environ, file_data, "TASKYARD_API_LOG_LEVEL", "log_level", "INFO").upper()
    if "TASKYARD_API_TRUST_FORWARDED_FOR" in environ:
        problems.append(
            "TASKYARD_API_TRUST_FORWARDED_FOR: removed (it trusted every peer); "
            "set TASKYARD_API_TRUSTED_PROXIES to your proxies' addresses instead"
        )

    groups = _load_groups(environ, file_data, problems)

    http: HttpSettings = groups["http"]
    if environ.get("HTTP_ADDR", "").strip():
        parsed = _parse_addr(environ["HTTP_ADDR"].strip(), problems)
        if parsed:
            http = dataclasses.replace(http, host=parsed[0], port=parsed[1])

    database = _database(groups["database"], data_dir, http, problems)

    auth = groups["auth"]
    if env == "prod":
        bad = jwt_secret_problem(auth.jwt_secret.reveal())
        if bad:
            problems.append(bad)
    elif not auth.jwt_secret:
        auth = dataclasses.replace(auth, jwt_secret=Secret(dev_jwt_secret(data_dir)))

    planner = planner_keys(groups["planner"], env, data_dir, problems)

    scheduler = SchedulerSettings()
    try:
        scheduler = load_scheduler_settings(environ, file_data)
    except SchedulerSettingsError as exc:
        problems.extend(exc.problems)

    if problems:
        raise SettingsError(problems)
    return ApiSettings(
        **{**groups, "http": http, "database": database, "auth": auth, "planner": planner},
        scheduler=scheduler,
        env=env,
        data_dir=data_dir,
        log_level=log_level,
    )

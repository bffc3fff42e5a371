"""Settings of the API process: the fields by group (`groups`), the loader (`loader`), dev keys (`keys`).

Everything the rest of the code imports is re-exported here, so `from api.settings import load_settings` keeps
working. The conversion itself is shared with the scheduler and the worker (`protocol.config`).
"""

from __future__ import annotations

import dataclasses

from api.settings.groups import (
    GROUPS,
    MAX_USER_CACHE_TTL_S,
    ApiSettings,
    AuthSettings,
    DatabaseSettings,
    HttpSettings,
    OpsSettings,
    PlannerSettings,
    RateLimitSettings,
    RedisSettings,
    TasksSettings,
    WsSettings,
    env_name,
)
from api.settings.keys import MIN_JWT_SECRET_BYTES
from api.settings.loader import SettingsError, load_settings
from protocol.config import Secret, field_docs

__all__ = (
    "GROUPS",
    "MAX_USER_CACHE_TTL_S",
    "MIN_JWT_SECRET_BYTES",
    "ApiSettings",
    "AuthSettings",
    "DatabaseSettings",
    "HttpSettings",
    "OpsSettings",
    "PlannerSettings",
    "RateLimitSettings",
    "RedisSettings",
    "Secret",
    "SettingsError",
    "TasksSettings",
    "WsSettings",
    "env_name",
    "load_settings",
    "settings_reference",
)

TOP_LEVEL = (
    ("APP_ENV", "env", "dev"),
    ("TASKYARD_DATA_DIR", "data_dir", ".taskyard"),
    ("TASKYARD_API_LOG_LEVEL", "log_level", "INFO"),
)
"""Variables outside the groups: (name, `ApiSettings` field, default)."""


def settings_reference() -> str:
    """A Markdown table of every API setting: env name, default, meaning."""
    lines = ["| env | default | meaning |", "| --- | --- | --- |"]
    top = field_docs(ApiSettings)
    lines += [f"| `{name}` | `{default}` | {top[key][0]} |" for name, key, default in TOP_LEVEL]
    lines.append("| `HTTP_ADDR` | `127.0.0.1:8000` | Listen address, host:port. |")
    lines.append("| `TASKYARD_CONFIG` | (none) | Optional YAML file with the same fields by section; env wins. |")
    for group, cls in GROUPS.items():
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if group == "http" and f.name in ("host", "port"):
                continue
            doc, default = docs.get(f.name, ("", ""))
            shown = "(secret)" if "Secret" in default or f.type.startswith("Secret") else default
            lines.append(f"| `{env_name(group, f.name)}` | `{shown}` | {doc} |")
    return "\n".join(lines) + "\n"

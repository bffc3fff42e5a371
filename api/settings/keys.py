"""Keys the API makes for itself in dev (kept in the data dir so restarts keep sessions and encrypted data),
and the shape checks of the keys an operator gives.

Dev JWT secret: with `APP_ENV=dev` and no `JWT_SECRET`, a random secret is kept in `<data dir>/jwt-secret`
(created mode 0600 on first start); if the file cannot be written the secret is random per process.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import secrets
from typing import TYPE_CHECKING

from api.settings.groups import PlannerSettings, env_name
from protocol.config import Secret

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ("MIN_JWT_SECRET_BYTES", "dev_jwt_secret", "jwt_secret_problem", "planner_keys")

MIN_JWT_SECRET_BYTES = 32
# Values people paste from examples; refused in production whatever their length.
_KNOWN_DEFAULT_SECRETS = frozenset(
    {"", "secret", "changeme", "change-me", "change_me", "dev", "dev-secret", "jwt-secret", "taskyard"}
)


def _persisted(path: Path, fresh: Callable[[], str], usable: Callable[[str], bool]) -> str:
    """The value kept in `path` when usable, else a fresh one written there (mode 0600); in memory only when the
    file cannot be written (then it changes per process)."""
    try:
        existing = path.read_text(encoding="utf-8").strip()
        if usable(existing):
            return existing
    except OSError:
        pass
    value = fresh()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value)
    except OSError:
        pass
    return value


def dev_jwt_secret(data_dir: Path) -> str:
    """The persisted dev JWT secret, created on first use."""
    return _persisted(
        data_dir / "jwt-secret", lambda: secrets.token_urlsafe(48), lambda v: len(v.encode()) >= MIN_JWT_SECRET_BYTES
    )


def _dev_key(data_dir: Path, name: str) -> str:
    """A persisted dev key (32 random bytes, base64url), like the dev JWT secret."""
    return _persisted(
        data_dir / name,
        lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode(),
        lambda v: _key_problem(v) is None,
    )


def _key_problem(value: str) -> str | None:
    """None when `value` is 32 bytes in base64url without padding, else what is wrong (never the value)."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        return "must be base64url"
    return None if len(raw) == 32 else "must decode to 32 bytes"


def _planner_key(current: Secret | None, name: str, env: str, data_dir: Path, problems: list[str]) -> Secret | None:
    if current is None and env == "dev":
        current = Secret(_dev_key(data_dir, name.replace("_", "-")))
    if current is not None:
        for part in current.reveal().split(","):
            bad = _key_problem(part.strip())
            if bad:
                problems.append(f"{env_name('planner', name)}: {bad}")
    return current


def planner_keys(planner: PlannerSettings, env: str, data_dir: Path, problems: list[str]) -> PlannerSettings:
    """The two keys, checked; in dev, generated into the data dir when unset (`secrets-key`, `llm-seal-key`)."""
    return dataclasses.replace(
        planner,
        secrets_key=_planner_key(planner.secrets_key, "secrets_key", env, data_dir, problems),
        llm_seal_key=_planner_key(planner.llm_seal_key, "llm_seal_key", env, data_dir, problems),
    )


def jwt_secret_problem(secret: str) -> str | None:
    if not secret:
        return "JWT_SECRET: required when APP_ENV=prod"
    if secret.strip().lower() in _KNOWN_DEFAULT_SECRETS:
        return "JWT_SECRET: a well-known default value is refused in prod"
    if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
        return f"JWT_SECRET: must be at least {MIN_JWT_SECRET_BYTES} bytes in prod"
    return None

"""Where the server is, who we are, and REST calls with the one error body turned into one line.

Precedence: `--url`/`--token` flags, then `TASKYARD_URL`/`TASKYARD_TOKEN`, then the file `taskyard login`
wrote (`$TASKYARD_CLIENT_CONFIG`, else `$XDG_CONFIG_HOME/taskyard/client.json`, else
`~/.config/taskyard/client.json`, mode 0600). Only a token from that file is refreshed on a 401, since
only there is a refresh token kept.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ("DEFAULT_URL", "ClientError", "Connection", "config_path", "connect", "save_config")

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 30.0


class ClientError(Exception):
    """A failure to report as one line on stderr with exit code 1."""


def config_path() -> Path:
    explicit = os.environ.get("TASKYARD_CLIENT_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "taskyard" / "client.json"


def load_config() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def save_config(data: dict[str, Any]) -> Path:
    """Write the file readable by its owner only (it holds tokens), replacing it atomically."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def error_line(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    line = f"{body.get('message') or 'HTTP ' + str(response.status_code)} ({body.get('error', response.status_code)})"
    details = body.get("details")
    if isinstance(details, dict) and details.get("field"):
        line += f" at {details['field']}"
    return line


@dataclass
class Connection:
    """One server and one identity; `request` refreshes a stored session once on a 401."""

    url: str
    token: str | None
    from_file: bool = False

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=TIMEOUT_S)

    def close(self) -> None:
        self._http.close()

    @property
    def ws_url(self) -> str:
        scheme, _, rest = self.url.partition("://")
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/ws?role=client"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None) -> Any:
        if not self.token:
            raise ClientError("not logged in: run `taskyard login`, or pass --token / set TASKYARD_TOKEN")
        response = self._send(method, path, json_body, params)
        if response.status_code == 401 and self.from_file and self.refresh():
            response = self._send(method, path, json_body, params)
        if response.status_code >= 400:
            raise ClientError(error_line(response))
        return None if response.status_code == 204 or not response.content else response.json()

    def _send(self, method: str, path: str, json_body: Any, params: dict[str, Any] | None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=json_body, params=params, headers=self.headers())
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from exc

    def login(self, email: str, password: str) -> dict[str, Any]:
        """The token pair for an email and password (`POST /api/auth/login`)."""
        response = self._send("POST", "/api/auth/login", {"email": email, "password": password}, None)
        if response.status_code != 200:
            raise ClientError(error_line(response))
        body: dict[str, Any] = response.json()
        return body

    def refresh(self) -> bool:
        """Trade the stored refresh token for new tokens; False when it is gone or refused."""
        stored = load_config()
        refresh_token = stored.get("refreshToken")
        if not refresh_token:
            return False
        try:
            response = self._http.post("/api/auth/refresh", json={"refreshToken": refresh_token})
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        body = response.json()
        self.token = str(body["accessToken"])
        save_config({**stored, "accessToken": self.token, "refreshToken": body["refreshToken"]})
        return True


def connect(url: str | None, token: str | None) -> Connection:
    """The connection the flags, environment and config file describe, in that order."""
    stored = load_config()
    url = url or os.environ.get("TASKYARD_URL") or stored.get("url") or DEFAULT_URL
    if token or os.environ.get("TASKYARD_TOKEN"):
        return Connection(url, token or os.environ.get("TASKYARD_TOKEN"))
    same_server = str(stored.get("url", "")).rstrip("/") == url.rstrip("/")
    return Connection(url, stored.get("accessToken") if same_server else None, from_file=same_server)

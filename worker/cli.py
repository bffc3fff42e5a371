"""`python -m worker` / `taskyard worker`: flags -> settings -> registry -> Agent, signals and exit codes.

Exit codes: 0 after a clean stop (drained), 1 when `--check` fails, 2 for bad configuration or credentials
the server refuses (retrying them cannot help, so a supervisor should not loop on it), 3 when the watchdog
found the link hung (`worker.agent.EXIT_HUNG`: restart it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

import click

from worker.agent import Agent
from worker.builtins import builtin_registry
from worker.connection import ConnectParams, open_connection
from worker.errors import AuthenticationError, ConnectionLostError, RegistryError, WorkerSettingsError
from worker.llm import LlmService, llm_registry
from worker.registry import Registry, load_registry
from worker.runtime import run as run_loop
from worker.runtime import tune_gc
from worker.settings import env_name, load_settings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from worker.settings import WorkerSettings

__all__ = ("EXIT_CHECK_FAILED", "EXIT_CONFIG", "EXIT_OK", "build_registry", "command", "main")

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_CONFIG = 2
"""Bad settings, unloadable handlers, or credentials the server refused."""

_LOG_FIELDS = ("agent_id", "task_id", "attempt", "task_type", "session_id", "error", "ref")


class _FieldsFormatter(logging.Formatter):
    """Human-readable lines with the structured fields (task_id, attempt, ...) appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{name}={record.__dict__[name]}" for name in _LOG_FIELDS if name in record.__dict__]
        return f"{line} {' '.join(fields)}" if fields else line


def _overrides(values: dict[str, Any]) -> dict[str, str]:
    """Flags given on the command line, as the environment variables they stand for."""
    env: dict[str, str] = {}
    for field in ("url", "agent_id", "agent_token", "concurrency", "drain_timeout_s", "log_level"):
        if values[field] is not None:
            env[env_name(field)] = values[field]
    if values["handlers"]:
        env[env_name("handlers")] = ",".join(values["handlers"])
    if values["enable_crash_handler"]:
        env[env_name("enable_crash_handler")] = "1"
    if values["no_builtins"]:
        env[env_name("builtins")] = "0"
    if values["token_in_query"]:
        env[env_name("token_in_query")] = "1"
    return env


def build_registry(settings: WorkerSettings, llm: LlmService | None = None) -> Registry[Any]:
    """The built-in handlers (unless disabled; the LLM ones when `llm` is given) plus every `module:attr`
    registry the settings name.

    Raises:
        RegistryError: a registry cannot be loaded, or two register the same type.
    """
    registry: Registry[Any] = Registry()
    if settings.builtins:
        registry.include(builtin_registry(enable_crash=settings.enable_crash_handler))
        if llm is not None:
            registry.include(llm_registry(llm))
    for ref in settings.handlers:
        registry.include(load_registry(ref))
    return registry


async def _check(settings: WorkerSettings) -> int:
    params = ConnectParams(
        url=settings.url,
        agent_id=settings.agent_id,
        agent_token=settings.agent_token,
        token_in_query=settings.token_in_query,
        open_timeout_s=settings.open_timeout_s,
        use_env_proxy=settings.use_env_proxy,
    )
    try:
        conn = await open_connection(params)
    except (AuthenticationError, ConnectionLostError) as exc:
        logger.error("check failed: %s", exc)
        return EXIT_CHECK_FAILED
    await conn.close()
    logger.info("check ok: authenticated as agent %s", settings.agent_id)
    return EXIT_OK


async def _serve(agent: Agent[Any], llm: LlmService | None) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stop)
    try:
        await agent.run()
    finally:
        if llm is not None:
            await llm.aclose()


def _run(ctx: click.Context, check: bool, values: dict[str, Any]) -> int:
    environ: Mapping[str, str] = ctx.obj if ctx.obj is not None else os.environ
    try:
        settings = load_settings({**environ, **_overrides(values)})
    except WorkerSettingsError as exc:
        click.echo(f"{ctx.command_path}: {exc}", err=True)
        return EXIT_CONFIG
    handler = logging.StreamHandler()
    handler.setFormatter(_FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    if check:
        return asyncio.run(_check(settings))
    llm = LlmService.from_settings(settings) if settings.builtins else None
    try:
        registry = build_registry(settings, llm)
    except RegistryError as exc:
        logger.error("cannot load handlers: %s", exc)
        return EXIT_CONFIG
    logger.info(
        "worker starting: agent %s, types %s, llm provider %s",
        settings.agent_id,
        ", ".join(registry.types),
        settings.llm_base_url,
    )
    tune_gc()
    try:
        run_loop(_serve(Agent(settings, registry), llm))
    except AuthenticationError as exc:
        logger.error("stopping: the server refused the agent's credentials (%s): %s", exc.error, exc.message)
        return EXIT_CONFIG
    logger.info("worker stopped")
    return EXIT_OK


@click.command(
    "worker",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Run one taskyard agent: connect to the API over WebSocket and run tasks. Every flag overrides its "
    "TASKYARD_WORKER_* environment variable. Exit codes: 0 stopped cleanly (drained), 1 --check failed, "
    "2 bad settings, unloadable handlers or refused credentials, 3 the link hung (restart it).",
    short_help="run one worker (one agent connection)",
)
@click.option("--url", help=f"WebSocket endpoint ({env_name('url')}).")
@click.option("--agent-id", help=f"Agent id ({env_name('agent_id')}).")
@click.option("--agent-token", help=f"Agent token ({env_name('agent_token')}; prefer the variable: flags show in ps).")
@click.option(
    "--concurrency",
    metavar="N",
    help=f"Local cap on tasks at once ({env_name('concurrency')}; default: the server's record).",
)
@click.option(
    "--drain-timeout-s",
    metavar="SECONDS",
    help=f"Grace period on SIGTERM ({env_name('drain_timeout_s')}, default 30).",
)
@click.option(
    "--handlers",
    multiple=True,
    metavar="MODULE:ATTR",
    help=f"Extra handler registry, repeatable ({env_name('handlers')}, comma-separated).",
)
@click.option(
    "--enable-crash-handler", is_flag=True, help="Register the `crash` task type (os._exit(1)), for fault tests only."
)
@click.option("--no-builtins", is_flag=True, help="Do not register noop/echo/... and the LLM types.")
@click.option("--token-in-query", is_flag=True, help="Send the token as ?agent_token= (not a header).")
@click.option("--log-level", metavar="LEVEL", help=f"DEBUG, INFO, WARNING, ERROR ({env_name('log_level')}).")
@click.option(
    "--check",
    is_flag=True,
    help="Connect and authenticate once, then exit 0 (ok) or 1 (not ok): a probe for supervisors.",
)
@click.pass_context
def command(ctx: click.Context, /, check: bool, **values: Any) -> None:
    code = _run(ctx, check, values)
    if code != EXIT_OK:
        ctx.exit(code)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the worker (`python -m worker`); returns the process exit code.

    The prog name follows TASKYARD_PROG, which `taskyard worker` sets before it hands over to this process.
    A usage error is one line, as under `taskyard`: `<prog>: error: <what> (see --help)`, exit 2.
    """
    prog = os.environ.get("TASKYARD_PROG", "python -m worker")
    args = list(argv) if argv is not None else None
    try:
        result = command.main(args=args, prog_name=prog, obj=environ, standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"{prog}: error: {exc.format_message().rstrip('.')} (see --help)", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return 130
    return result if isinstance(result, int) else EXIT_OK

"""The client subcommands as click commands (`client_commands`, added to the `taskyard` group by `taskyard.cli`)."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from taskyard.client.http import DEFAULT_URL, ClientError, Connection, connect, save_config
from taskyard.client.watch import EXIT_CANCELED, EXIT_DONE, EXIT_FAILED, watch_task

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("client_commands",)

EXIT_CODES_HELP = (
    f"Exit codes: {EXIT_DONE} done, 1 error (unreachable, refused, not found), 2 bad usage, "
    f"{EXIT_FAILED} the task failed, {EXIT_CANCELED} the task was canceled."
)
MAX_INPUT_BYTES = 262_144
"""The server's task input limit; checked here too so a typo'd file name is not uploaded in full."""


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _server_command(func: Callable[..., int]) -> Callable[..., None]:
    """Give a command `--url`, `--token` and `--json`, a connection, and the client's error handling: one line
    on stderr and exit 1 for any client error, 130 on Ctrl-C; otherwise the command's own exit code."""

    @click.option("--url", default=None, help=f"Server URL (else TASKYARD_URL, the login file, {DEFAULT_URL}).")
    @click.option("--token", default=None, help="Access token (else TASKYARD_TOKEN, else the login file).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
    @click.pass_context
    def run(ctx: click.Context, /, url: str | None, token: str | None, **options: Any) -> None:
        conn = connect(url, token)
        try:
            code = func(conn, **options)
        except ClientError as exc:
            click.echo(f"taskyard: error: {exc}", err=True)
            code = 1
        except KeyboardInterrupt:
            code = 130
        finally:
            conn.close()
        ctx.exit(code)

    return run


def _row(*cells: Any, widths: tuple[int, ...]) -> str:
    return "  ".join(str(c if c is not None else "-")[:w].ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


# --- commands -------------------------------------------------------------------------------------

_LOGIN_HELP = (
    "Log in to a server and keep the session for these commands. Saves the server URL and tokens in the client "
    "config file with mode 0600 ($TASKYARD_CLIENT_CONFIG, else ~/.config/taskyard/client.json). The password is "
    "asked for, or read from stdin with --password-stdin."
)


@click.command("login", help=_LOGIN_HELP, short_help="log in to a server and keep the session for these commands")
@click.option("--url", default=None, help=f"Server URL (else TASKYARD_URL, else {DEFAULT_URL}).")
@click.option("--token", default=None, hidden=True)  # accepted like every client command; login makes its own
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--email", default=None, help="Account email (asked when absent).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first stdin line.")
@click.pass_context
def _login(
    ctx: click.Context, *, url: str | None, token: str | None, as_json: bool, email: str | None, password_stdin: bool
) -> None:
    del token
    url = (url or os.environ.get("TASKYARD_URL") or DEFAULT_URL).rstrip("/")
    email = email or input("email: ").strip()
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else getpass.getpass("password: ")
    conn = Connection(url, None)
    try:
        body = conn.login(email, password)
    except ClientError as exc:
        click.echo(f"taskyard: error: {exc}", err=True)
        ctx.exit(1)
    finally:
        conn.close()
    path = save_config(
        {"url": url, "email": email, "accessToken": body["accessToken"], "refreshToken": body["refreshToken"]}
    )
    if as_json:
        _print_json({"url": url, "email": email, "config": str(path)})
    else:
        click.echo(f"logged in to {url} as {email}; session saved in {path} (mode 0600)")


def _task_body(options: dict[str, Any]) -> dict[str, Any]:
    raw, input_file = options["input"], options["input_file"]
    if raw is not None and input_file is not None:
        raise click.UsageError("--input and --input-file are mutually exclusive", click.get_current_context())
    if input_file is not None:
        try:
            raw = sys.stdin.read() if input_file == "-" else Path(input_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ClientError(f"cannot read {input_file}: {exc.strerror}") from exc
    if raw is not None and len(raw.encode()) > MAX_INPUT_BYTES:
        raise ClientError(f"the input is over {MAX_INPUT_BYTES} bytes")
    try:
        value = json.loads(raw) if raw is not None else {}
    except ValueError as exc:
        raise ClientError(f"--input is not valid JSON: {exc}") from exc
    body: dict[str, Any] = {"type": options["task_type"], "input": value, "priority": options["priority"]}
    optional = (
        ("capabilities", list(options["capability"])),
        ("agentId", options["agent"]),
        ("timeoutSeconds", options["timeout"]),
        ("maxAttempts", options["max_attempts"]),
        ("idempotencyKey", options["idempotency_key"]),
    )
    body.update({key: value for key, value in optional if value not in (None, "", [])})
    return body


@click.group(
    "tasks",
    help="Submit, list, read, watch and cancel tasks on a running server, over its REST API "
    "and /ws. " + EXIT_CODES_HELP,
    short_help="submit, list, read, watch and cancel tasks on a server",
)
def _tasks() -> None:
    pass


@_tasks.command(
    "submit",
    help="Submit one task and print its id. With --watch, follow it to its end. " + EXIT_CODES_HELP,
    short_help="submit a task and print its id",
)
@click.argument("task_type", metavar="TYPE")
@click.option("--input", default=None, help='Input JSON (default {}), e.g. \'{"text": "hi"}\'.')
@click.option("--input-file", default=None, metavar="PATH", help="Read the input JSON from a file (- for stdin).")
@click.option("--priority", type=click.IntRange(0, 9), default=5, show_default=True, help="0-9, higher runs first.")
@click.option("--capability", multiple=True, help="A capability the agent needs (repeat for several).")
@click.option("--agent", default=None, help="Pin to this agent id.")
@click.option("--timeout", type=int, default=None, help="Seconds per attempt (server default 900).")
@click.option("--max-attempts", type=int, default=None, help="Attempts before failing (server default 3).")
@click.option("--idempotency-key", default=None, help="Resubmitting with the same key returns the first task.")
@click.option("--watch", is_flag=True, help="Then follow it like `tasks watch`.")
@_server_command
def _submit(conn: Connection, *, as_json: bool, watch: bool, **options: Any) -> int:
    task = conn.request("POST", "/api/tasks", json_body=_task_body(options))
    if watch:
        if not as_json:
            click.echo(f"submitted {task['id']}", err=True)
        return watch_task(conn, task["id"], as_json=as_json)
    if as_json:
        _print_json(task)
    else:
        click.echo(task["id"])
    return 0


@_tasks.command(
    "list",
    help="One page of your tasks (admins: all), newest first.",
    short_help="list your tasks (admins: all), newest first",
)
@click.option("--status", default=None, help="scheduled, queued, assigned, running, done, failed or canceled.")
@click.option("--type", "task_type", default=None, help="Only this task type.")
@click.option("--agent", default=None, help="Only tasks of this agent id.")
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--page-size", type=click.IntRange(1, 100), default=20, show_default=True)
@_server_command
def _list(
    conn: Connection,
    *,
    as_json: bool,
    status: str | None,
    task_type: str | None,
    agent: str | None,
    page: int,
    page_size: int,
) -> int:
    params: dict[str, Any] = {"page": page, "pageSize": page_size}
    for key, value in (("status", status), ("type", task_type), ("agentId", agent)):
        if value:
            params[key] = value
    found = conn.request("GET", "/api/tasks", params=params)
    if as_json:
        _print_json(found)
        return 0
    widths = (36, 9, 24, 3, 20)
    click.echo(_row("ID", "STATUS", "TYPE", "PRI", "CREATED", widths=widths))
    for t in found["items"]:
        click.echo(_row(t["id"], t["status"], t["type"], t["priority"], t["createdAt"][:19], widths=widths))
    last = max(1, -(-found["total"] // found["pageSize"]))
    click.echo(f"page {found['page']} of {last}, {found['total']} tasks", err=True)
    return 0


@_tasks.command("get", help="A task with its input, result and error.", short_help="show a task, its input and result")
@click.argument("task_id", metavar="TASK_ID")
@_server_command
def _get(conn: Connection, *, as_json: bool, task_id: str) -> int:
    task = conn.request("GET", f"/api/tasks/{task_id}")
    if as_json:
        _print_json(task)
        return 0
    for key in ("id", "type", "status", "priority", "attempt", "agentId", "capabilities", "createdAt", "finishedAt"):
        value = task.get(key)
        shown = ", ".join(value) if isinstance(value, list) else value if value is not None else "-"
        click.echo(f"{key + ':':14}{shown}")
    if task.get("error"):
        click.echo(f"{'error:':14}{task['error']['error']}: {task['error']['message']}")
    click.echo("input:")
    click.echo(json.dumps(task.get("input"), indent=2, ensure_ascii=False))
    if "result" in task:
        click.echo("result:")
        click.echo(json.dumps(task["result"], indent=2, ensure_ascii=False))
    return 0


@_tasks.command(
    "watch",
    help="Follow a task live until it ends: status changes and progress on stderr (a progress bar on a terminal), "
    "streamed output on stdout as it is written; --json prints one JSON event per line, then the task. "
    + EXIT_CODES_HELP,
    short_help="follow a task live until it ends",
)
@click.argument("task_id", metavar="TASK_ID")
@_server_command
def _watch(conn: Connection, *, as_json: bool, task_id: str) -> int:
    return watch_task(conn, task_id, as_json=as_json)


@_tasks.command(
    "cancel", help="Cancel a task (409 once it has ended).", short_help="cancel a task that has not finished"
)
@click.argument("task_id", metavar="TASK_ID")
@_server_command
def _cancel(conn: Connection, *, as_json: bool, task_id: str) -> int:
    task = conn.request("POST", f"/api/tasks/{task_id}/cancel")
    if as_json:
        _print_json(task)
    else:
        click.echo(f"{task['id']} {task['status']}")
    return 0


@click.group("agents", help="Agents on a running server.", short_help="list the agents you may see")
def _agents() -> None:
    pass


@_agents.command(
    "list",
    help="Agents you may see (admins: all), with online state and load.",
    short_help="agents with their state and load",
)
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--page-size", type=click.IntRange(1, 200), default=50, show_default=True)
@_server_command
def _agents_list(conn: Connection, *, as_json: bool, page: int, page_size: int) -> int:
    agents = conn.request("GET", "/api/agents", params={"page": page, "pageSize": page_size})
    if as_json:
        _print_json(agents)
        return 0
    widths = (36, 20, 7, 7, 30)
    click.echo(_row("ID", "NAME", "STATE", "LOAD", "CAPABILITIES", widths=widths))
    for a in agents["items"]:
        state = "online" if a["online"] else "offline"
        load = f"{a['running']}/{a['concurrency']}"
        click.echo(_row(a["id"], a["name"], state, load, ",".join(a["capabilities"]) or "-", widths=widths))
    return 0


def client_commands() -> tuple[click.Command, ...]:
    """`login`, `tasks ...` and `agents list`, for the `taskyard` group."""
    return (_login, _tasks, _agents)

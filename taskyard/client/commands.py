"""The client subcommands and their argparse wiring (`add_client_commands`, called by `taskyard.cli`)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from taskyard.client.http import DEFAULT_URL, ClientError, Connection, connect, save_config
from taskyard.client.watch import EXIT_CANCELED, EXIT_DONE, EXIT_FAILED, watch_task

__all__ = ("add_client_commands",)

EXIT_CODES_HELP = (
    f"Exit codes: {EXIT_DONE} done, 1 error (unreachable, refused, not found), 2 bad usage, "
    f"{EXIT_FAILED} the task failed, {EXIT_CANCELED} the task was canceled."
)
MAX_INPUT_BYTES = 262_144
"""The server's task input limit; checked here too so a typo'd file name is not uploaded in full."""


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _run(func: Any) -> Any:
    """Wrap a command: one line on stderr and exit 1 for any client error."""

    def run(args: argparse.Namespace) -> int:
        conn = connect(args.url, args.token)
        try:
            result: int = func(conn, args)
            return result
        except ClientError as exc:
            print(f"taskyard: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            conn.close()

    return run


def _row(*cells: Any, widths: tuple[int, ...]) -> str:
    return "  ".join(str(c if c is not None else "-")[:w].ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


# --- commands -------------------------------------------------------------------------------------


def _cmd_login(args: argparse.Namespace) -> int:
    url = (args.url or os.environ.get("TASKYARD_URL") or DEFAULT_URL).rstrip("/")
    email = args.email or input("email: ").strip()
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("password: ")
    conn = Connection(url, None)
    try:
        body = conn.login(email, password)
    except ClientError as exc:
        print(f"taskyard: error: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    path = save_config(
        {"url": url, "email": email, "accessToken": body["accessToken"], "refreshToken": body["refreshToken"]}
    )
    if args.json:
        _print_json({"url": url, "email": email, "config": str(path)})
    else:
        print(f"logged in to {url} as {email}; session saved in {path} (mode 0600)")
    return 0


def _task_body(args: argparse.Namespace) -> dict[str, Any]:
    raw = args.input
    if args.input_file is not None:
        try:
            raw = sys.stdin.read() if args.input_file == "-" else Path(args.input_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ClientError(f"cannot read {args.input_file}: {exc.strerror}") from exc
    if raw is not None and len(raw.encode()) > MAX_INPUT_BYTES:
        raise ClientError(f"the input is over {MAX_INPUT_BYTES} bytes")
    try:
        value = json.loads(raw) if raw is not None else {}
    except ValueError as exc:
        raise ClientError(f"--input is not valid JSON: {exc}") from exc
    body: dict[str, Any] = {"type": args.type, "input": value, "priority": args.priority}
    if args.capability:
        body["capabilities"] = args.capability
    if args.agent:
        body["agentId"] = args.agent
    if args.timeout is not None:
        body["timeoutSeconds"] = args.timeout
    if args.max_attempts is not None:
        body["maxAttempts"] = args.max_attempts
    if args.idempotency_key:
        body["idempotencyKey"] = args.idempotency_key
    return body


def _cmd_submit(conn: Connection, args: argparse.Namespace) -> int:
    task = conn.request("POST", "/api/tasks", json_body=_task_body(args))
    if args.watch:
        if not args.json:
            print(f"submitted {task['id']}", file=sys.stderr)
        return watch_task(conn, task["id"], as_json=args.json)
    if args.json:
        _print_json(task)
    else:
        print(task["id"])
    return 0


def _cmd_list(conn: Connection, args: argparse.Namespace) -> int:
    params = {"page": args.page, "pageSize": args.page_size}
    for key, value in (("status", args.status), ("type", args.type), ("agentId", args.agent)):
        if value:
            params[key] = value
    page = conn.request("GET", "/api/tasks", params=params)
    if args.json:
        _print_json(page)
        return 0
    widths = (36, 9, 24, 3, 20)
    print(_row("ID", "STATUS", "TYPE", "PRI", "CREATED", widths=widths))
    for t in page["items"]:
        print(_row(t["id"], t["status"], t["type"], t["priority"], t["createdAt"][:19], widths=widths))
    last = max(1, -(-page["total"] // page["pageSize"]))
    print(f"page {page['page']} of {last}, {page['total']} tasks", file=sys.stderr)
    return 0


def _cmd_get(conn: Connection, args: argparse.Namespace) -> int:
    task = conn.request("GET", f"/api/tasks/{args.task_id}")
    if args.json:
        _print_json(task)
        return 0
    for key in ("id", "type", "status", "priority", "attempt", "agentId", "capabilities", "createdAt", "finishedAt"):
        value = task.get(key)
        print(f"{key + ':':14}{', '.join(value) if isinstance(value, list) else value if value is not None else '-'}")
    if task.get("error"):
        print(f"{'error:':14}{task['error']['error']}: {task['error']['message']}")
    print("input:")
    print(json.dumps(task.get("input"), indent=2, ensure_ascii=False))
    if "result" in task:
        print("result:")
        print(json.dumps(task["result"], indent=2, ensure_ascii=False))
    return 0


def _cmd_watch(conn: Connection, args: argparse.Namespace) -> int:
    return watch_task(conn, args.task_id, as_json=args.json)


def _cmd_cancel(conn: Connection, args: argparse.Namespace) -> int:
    task = conn.request("POST", f"/api/tasks/{args.task_id}/cancel")
    if args.json:
        _print_json(task)
    else:
        print(f"{task['id']} {task['status']}")
    return 0


def _cmd_agents(conn: Connection, args: argparse.Namespace) -> int:
    agents = conn.request("GET", "/api/agents", params={"page": args.page, "pageSize": args.page_size})
    if args.json:
        _print_json(agents)
        return 0
    widths = (36, 20, 7, 7, 30)
    print(_row("ID", "NAME", "STATE", "LOAD", "CAPABILITIES", widths=widths))
    for a in agents["items"]:
        state = "online" if a["online"] else "offline"
        load = f"{a['running']}/{a['concurrency']}"
        print(_row(a["id"], a["name"], state, load, ",".join(a["capabilities"]) or "-", widths=widths))
    return 0


# --- parser ---------------------------------------------------------------------------------------


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other error of these commands."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument("--url", default=None, help=f"server URL (else TASKYARD_URL, the login file, {DEFAULT_URL})")
    group.add_argument("--token", default=None, help="access token (else TASKYARD_TOKEN, else the login file)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    return common


def _add_tasks(sub: Any, common: argparse.ArgumentParser) -> None:
    tasks = sub.add_parser(
        "tasks",
        help="submit, list, read, watch and cancel tasks on a server",
        description=("Talk to a running server over its REST API and /ws. " + EXIT_CODES_HELP),
    )
    tsub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="ACTION", parser_class=_OneLineParser)

    p = tsub.add_parser(
        "submit",
        parents=[common],
        help="submit a task and print its id",
        description="Submit one task. With --watch, follow it to its end. " + EXIT_CODES_HELP,
    )
    p.add_argument("type", help="task type, e.g. echo or llm.chat")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", default=None, help='input JSON (default {}), e.g. \'{"text": "hi"}\'')
    src.add_argument("--input-file", default=None, metavar="PATH", help="read the input JSON from a file (- for stdin)")
    p.add_argument("--priority", type=int, default=5, choices=range(10), metavar="0-9", help="higher runs first (5)")
    p.add_argument("--capability", action="append", help="a capability the agent needs (repeat for several)")
    p.add_argument("--agent", default=None, help="pin to this agent id")
    p.add_argument("--timeout", type=int, default=None, help="seconds per attempt (server default 900)")
    p.add_argument("--max-attempts", type=int, default=None, help="attempts before failing (server default 3)")
    p.add_argument("--idempotency-key", default=None, help="resubmitting with the same key returns the first task")
    p.add_argument("--watch", action="store_true", help="then follow it like `tasks watch`")
    p.set_defaults(func=_run(_cmd_submit))

    p = tsub.add_parser(
        "list",
        parents=[common],
        help="list your tasks (admins: all), newest first",
        description="One page of tasks, newest first.",
    )
    p.add_argument("--status", default=None, help="scheduled, queued, assigned, running, done, failed or canceled")
    p.add_argument("--type", default=None, help="only this task type")
    p.add_argument("--agent", default=None, help="only tasks of this agent id")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--page-size", type=int, default=20, help="1..100 (20)")
    p.set_defaults(func=_run(_cmd_list))

    for name, func, helptext, desc in (
        ("get", _cmd_get, "show a task, its input and result", "A task with its input, result and error."),
        (
            "watch",
            _cmd_watch,
            "follow a task live until it ends",
            "Status changes and progress on stderr (a progress bar on a terminal), streamed output on stdout as "
            "it is written; --json prints one JSON event per line, then the task. " + EXIT_CODES_HELP,
        ),
        ("cancel", _cmd_cancel, "cancel a task that has not finished", "Cancel a task (409 once it has ended)."),
    ):
        p = tsub.add_parser(name, parents=[common], help=helptext, description=desc)
        p.add_argument("task_id", metavar="TASK_ID")
        p.set_defaults(func=_run(func))


def add_client_commands(sub: Any) -> None:
    """Register `login`, `tasks ...` and `agents list` on the `taskyard` parser's subcommands."""
    common = _common()
    p = sub.add_parser(
        "login",
        parents=[common],
        help="log in to a server and keep the session for these commands",
        description="Saves the server URL and tokens in the client config file with mode 0600 "
        "($TASKYARD_CLIENT_CONFIG, else ~/.config/taskyard/client.json).",
    )
    p.add_argument("--email", default=None, help="account email (asked when absent)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first stdin line")
    p.set_defaults(func=_cmd_login)
    _add_tasks(sub, common)
    agents = sub.add_parser("agents", help="list the agents you may see", description="Agents on a server.")
    asub = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION", parser_class=_OneLineParser)
    p = asub.add_parser(
        "list",
        parents=[common],
        help="agents with their state and load",
        description="Agents you may see (admins: all), with online state and load.",
    )
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--page-size", type=int, default=50, help="1..200 (50)")
    p.set_defaults(func=_run(_cmd_agents))

"""`taskyard tasks watch`: follow one task over /ws until it ends; the exit code says how it ended.

The recorded history (`GET /api/tasks/{id}`) is shown first, then `subscribe` with `lastSeq` delivers the
rest in `seq` order (repeats dropped). A dropped socket is reopened with `lastSeq`; after a quiet spell the
task is re-read over REST, since the live fan-out is at most once and a terminal event could be missed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import connect

from protocol.envelope import encode_frame
from protocol.messages import Heartbeat, Subscribe
from taskyard.client.http import ClientError

if TYPE_CHECKING:
    from taskyard.client.http import Connection

__all__ = ("EXIT_CANCELED", "EXIT_CODES", "EXIT_DONE", "EXIT_FAILED", "watch_task")

EXIT_DONE = 0
EXIT_FAILED = 3
EXIT_CANCELED = 4
EXIT_CODES = {"done": EXIT_DONE, "failed": EXIT_FAILED, "canceled": EXIT_CANCELED}
QUIET_RECHECK_S = 10.0
MAX_RECONNECTS = 20


class _Printer:
    """Human output: stream text to stdout as it comes, status and progress on stderr."""

    def __init__(self, out: TextIO, err: TextIO, as_json: bool) -> None:
        self.out, self.err, self.as_json = out, err, as_json
        self.attempt_text: dict[int, int] = {}  # attempt -> UTF-8 bytes of its stream printed so far
        self.bar_shown = False

    def event(self, event: dict[str, Any]) -> None:
        if self.as_json:
            self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.out.flush()
            return
        kind = event["type"]
        if kind == "task/stream":
            self._piece(int(event["attempt"]), int(event["offset"]), str(event["delta"]))
        elif kind == "task/progress":
            self._progress(event.get("data"), event.get("message"))
        elif kind == "task/status":
            self._end_bar()
            agent = f" on {event['agentId']}" if event.get("agentId") else ""
            reason = f" ({event['reason']})" if event.get("reason") else ""
            self.err.write(f"[{event['status']}] attempt {event['attempt']}{agent}{reason}\n")
            self.err.flush()

    def _piece(self, attempt: int, offset: int, delta: str) -> None:
        self._end_bar()
        seen = self.attempt_text.get(attempt)
        if seen is None:
            if self.attempt_text:
                self.out.write("\n")
            self.err.write(f"--- output of attempt {attempt} ---\n")
            self.err.flush()
            seen = 0
        data = delta.encode()
        if offset + len(data) <= seen:
            return
        skip = max(0, seen - offset)  # a resent piece overlaps what was printed: print only its new part
        self.out.write(data[skip:].decode(errors="replace"))
        self.out.flush()
        self.attempt_text[attempt] = offset + len(data)

    def _progress(self, data: Any, message: Any) -> None:
        fraction = None
        if isinstance(data, dict):
            done = next(
                (data[k] for k in ("done", "current", "elapsedS") if isinstance(data.get(k), int | float)), None
            )
            total = next((data[k] for k in ("total", "totalS") if isinstance(data.get(k), int | float)), None)
            if done is not None and total:
                fraction = max(0.0, min(1.0, float(done) / float(total)))
        label = str(message) if message else (json.dumps(data) if data is not None and fraction is None else "")
        if fraction is not None and self.err.isatty():
            width = 30
            bar = "#" * round(fraction * width) + "." * (width - round(fraction * width))
            self.err.write(f"\r[{bar}] {fraction * 100:5.1f}% {label[:40]}")
            self.bar_shown = True
        else:
            pct = f"{fraction * 100:.1f}% " if fraction is not None else ""
            self.err.write(f"progress: {pct}{label}\n")
        self.err.flush()

    def _end_bar(self) -> None:
        if self.bar_shown:
            self.err.write("\n")
            self.bar_shown = False

    def finish(self, task: dict[str, Any]) -> None:
        self._end_bar()
        if self.as_json:
            self.out.write(json.dumps({"type": "task", "task": task}, ensure_ascii=False) + "\n")
            return
        if self.attempt_text:
            self.out.write("\n")
        if task["status"] == "failed" and task.get("error"):
            self.err.write(f"failed: {task['error'].get('error')}: {task['error'].get('message')}\n")
        elif task.get("result") is not None and not self.attempt_text:
            self.out.write(json.dumps(task["result"], indent=2, ensure_ascii=False) + "\n")
        self.out.flush()
        self.err.flush()


def _flat(event: dict[str, Any]) -> dict[str, Any]:
    """A recorded history entry in the shape of the live frame's payload."""
    data = event.get("data")
    flat = {"type": event["type"], "seq": event["seq"], "attempt": event["attempt"]}
    if event["type"] == "task/status":
        flat.update(status=event.get("status"), agentId=event.get("agentId"), at=event.get("at"))
        if isinstance(data, dict) and data.get("reason"):
            flat["reason"] = data["reason"]
    elif isinstance(data, dict):
        flat.update(data)
    return flat


def watch_task(
    conn: Connection, task_id: str, *, as_json: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Print the task's events until it is done, failed or canceled; return that outcome's exit code."""
    printer = _Printer(out, err, as_json)
    task = conn.request("GET", f"/api/tasks/{task_id}")
    last_seq = 0
    for event in task.get("events") or []:
        printer.event({"taskId": task_id, **_flat(event)})
        last_seq = max(last_seq, int(event["seq"]))
    if task["status"] in EXIT_CODES:
        printer.finish(task)
        return EXIT_CODES[task["status"]]
    failures = 0
    while True:
        try:
            status, last_seq = _follow(conn, task_id, last_seq, printer)
            failures = 0
        except (OSError, WebSocketException) as exc:
            refused = isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403)
            if refused and not (conn.from_file and conn.refresh()):
                raise ClientError("the server refused the token for /ws; run `taskyard login`") from exc
            failures += 1
            if failures > MAX_RECONNECTS:
                raise ClientError(f"lost the connection to {conn.url}: {exc}") from exc
            time.sleep(min(0.5 * failures, 5.0))
            status = None
        task = _settled(conn, task_id, wait_s=10.0 if status else 0.0)
        if status is None and task["status"] not in EXIT_CODES:
            continue  # quiet or dropped, still running: subscribe again from last_seq
        printer.finish(task)
        return EXIT_CODES[status or str(task["status"])]


def _settled(conn: Connection, task_id: str, *, wait_s: float) -> dict[str, Any]:
    """The task over REST; after a terminal event, give the row a moment to catch up with it."""
    deadline = time.monotonic() + wait_s
    while True:
        task: dict[str, Any] = conn.request("GET", f"/api/tasks/{task_id}")
        if task["status"] in EXIT_CODES or time.monotonic() >= deadline:
            return task
        time.sleep(0.2)


def _follow(conn: Connection, task_id: str, last_seq: int, printer: _Printer) -> tuple[str | None, int]:
    """One socket: subscribe from `last_seq` and print events. Returns the terminal status when one arrives,
    or None after a quiet spell or a close, so the caller re-reads the task."""
    with connect(conn.ws_url, additional_headers=conn.headers(), open_timeout=15) as socket:
        hello = json.loads(socket.recv(timeout=15))
        if hello.get("type") != "auth/ok":
            raise ClientError(f"/ws refused: {hello.get('payload', {}).get('message', hello.get('type'))}")
        interval = float(hello["payload"].get("heartbeatIntervalS") or 30)
        socket.send(encode_frame(Subscribe(task_id=task_id, last_seq=last_seq)).decode())
        quiet_since = time.monotonic()
        last_beat = time.monotonic()
        while True:
            if time.monotonic() - last_beat >= interval:
                socket.send(encode_frame(Heartbeat()).decode())
                last_beat = time.monotonic()
            try:
                frame = json.loads(socket.recv(timeout=1.0))
            except TimeoutError:
                if time.monotonic() - quiet_since > QUIET_RECHECK_S:
                    return None, last_seq
                continue
            except ConnectionClosed:
                return None, last_seq
            payload = frame.get("payload") or {}
            if frame.get("type") == "error" and payload.get("error") == "not_found":
                raise ClientError(f"task {task_id} not found")
            if payload.get("taskId") != task_id or "seq" not in payload:
                continue
            quiet_since = time.monotonic()
            if int(payload["seq"]) <= last_seq:
                continue  # a repeat from a replay
            last_seq = int(payload["seq"])
            printer.event({"type": frame["type"], **payload})
            if frame["type"] == "task/status" and payload.get("status") in EXIT_CODES:
                return str(payload["status"]), last_seq

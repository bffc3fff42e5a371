"""Fault drills on a multi-replica stack: two APIs, two schedulers, several workers, real PostgreSQL and Redis.

A drill submits short sleep tasks, injects its fault at about a quarter done, then checks what every drill
must keep: every task terminal and done (none lost), exactly one recorded result (the right one), a complete
history (every status in order; recorded asynchronously, so waited for with a bound) and slots back to zero.
"""

from __future__ import annotations

import itertools
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from tests.e2e.stack import Proc, Stack, wait_until

TASKS = 160
SLOTS = 4
SETTLE_S = 90.0
"""Bound on the drill's tasks all finishing after the fault (a liveness bound, not a timing claim)."""
HISTORY_S = 30.0
"""Bound on the recorded history catching up with the task rows."""

_MOVES = {
    ("queued", "assigned"),
    ("assigned", "running"),
    ("assigned", "queued"),
    ("assigned", "done"),
    ("assigned", "scheduled"),
    ("running", "queued"),
    ("running", "done"),
    ("running", "scheduled"),
    ("scheduled", "queued"),
}
"""Status changes a task may make on its way to `done` (a lost agent sends it back to `queued`)."""


@dataclass
class Worker:
    agent_id: str
    token: str
    name: str
    api_url: str
    proc: Proc


@dataclass
class Drill:
    """The stack of one drill and the tasks it submitted (id -> seconds slept)."""

    stack: Stack
    admin: str
    apis: list[str]
    workers: list[Worker] = field(default_factory=list)
    tasks: dict[str, float] = field(default_factory=dict)

    def start_worker(self, index: int, *, name: str | None = None) -> Proc:
        """(Re)start worker `index` under its own agent id."""
        worker = self.workers[index]
        worker.proc = self.stack.start_worker(
            worker.agent_id,
            worker.token,
            concurrency=SLOTS,
            name=name or worker.name,
            api_url=worker.api_url,
            TASKYARD_WORKER_BACKOFF_MAX_S="1",
        )
        return worker.proc

    def statuses(self) -> dict[str, str]:
        return {t["id"]: t["status"] for t in self.stack.tasks(self.admin) if t["id"] in self.tasks}

    def done_count(self) -> int:
        return sum(1 for status in self.statuses().values() if status == "done")

    def redis_task(self, task_id: str) -> dict[str, str]:
        """The scheduler's own view of a task (Redis leads; the database row trails it)."""
        client = redis.Redis.from_url(self.stack.redis_url)
        try:
            raw = client.hgetall(f"{self.stack.prefix}:task:{task_id}")
        finally:
            client.close()
        return {k.decode(): v.decode() for k, v in raw.items()}

    def running_on(self, worker: Worker) -> list[str]:
        """The drill's tasks the scheduler has `running` on `worker` (its view, read in one round trip)."""
        client = redis.Redis.from_url(self.stack.redis_url)
        try:
            pipe = client.pipeline(transaction=False)
            for task_id in self.tasks:
                pipe.hmget(f"{self.stack.prefix}:task:{task_id}", "status", "agent")
            rows = pipe.execute()
        finally:
            client.close()
        holder = worker.agent_id.encode()
        return [
            task_id
            for task_id, (status, agent) in zip(self.tasks, rows, strict=True)
            if status == b"running" and agent == holder
        ]

    def freeze_while_running(self, worker: Worker, *, settle_s: float = 0.3, timeout_s: float = 30.0) -> None:
        """SIGSTOP `worker` at a moment it holds a `running` attempt (left frozen; the caller kills it).

        Frozen, it sends nothing new; after `settle_s` whatever it sent before has landed, so the attempts the
        scheduler then shows running on it stay stranded. A moment it held none (all just submitted, or
        between tasks on a loaded box) is let go and tried again.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self.stack.kill(worker.proc, signal.SIGSTOP)
            time.sleep(settle_s)
            if self.running_on(worker):
                return
            self.stack.kill(worker.proc, signal.SIGCONT)
            assert time.monotonic() < deadline, f"{worker.name} never held a running attempt"
            time.sleep(0.05)


def start_drill(
    stack: Stack,
    *,
    workers: int = 3,
    tasks: int = TASKS,
    worker_apis: list[int] | None = None,
    progress_every_s: float | None = None,
) -> Drill:
    """A second API and scheduler, `workers` workers (worker i on API `worker_apis[i]`), `tasks` sleeps queued.

    `progress_every_s`: the sleeps report progress this often, which makes their attempts `running` on the
    server at once (our worker sends no `task/accept` for a task that finishes quickly: its result implies it).
    """
    admin = stack.create_admin()
    apis = [stack.api_url, stack.start_api(name="api-2")]
    stack.start_scheduler(name="scheduler-2")
    drill = Drill(stack, admin, apis)
    on = worker_apis or [i % 2 for i in range(workers)]
    for i in range(workers):
        agent_id, token = stack.create_agent(capabilities=["drill"], concurrency=SLOTS, name=f"drill-{i}")
        drill.workers.append(Worker(agent_id, token, f"worker-{i}", apis[on[i]], proc=None))  # type: ignore[arg-type]
        drill.start_worker(i)
    wait_until(
        lambda: all(a["online"] for a in _agents(stack, admin).values()) and len(_agents(stack, admin)) == workers,
        timeout_s=30,
        what="every drill worker online",
    )
    rng = random.Random(7)
    specs: list[dict[str, float]] = [{"seconds": round(rng.uniform(0.05, 0.3), 3)} for _ in range(tasks)]
    if progress_every_s is not None:
        for spec in specs:
            spec["progressEvery"] = progress_every_s
    created = stack.submit_batch(
        admin,
        [
            {"type": "sleep", "input": spec, "capabilities": ["drill"], "maxAttempts": 3, "timeoutSeconds": 300}
            for spec in specs
        ],
    )
    drill.tasks = {task["id"]: spec["seconds"] for task, spec in zip(created, specs, strict=True)}
    return drill


def wait_quarter_done(drill: Drill) -> None:
    """The fault goes in at about 25 % done, as in the operator's drill."""
    wait_until(lambda: drill.done_count() >= len(drill.tasks) // 4, timeout_s=60, what="a quarter of the drill done")


def check_drill(drill: Drill) -> list[dict[str, Any]]:
    """Everything every drill must keep; returns the final task views."""
    wait_until(
        lambda: set(drill.statuses().values()) == {"done"} and len(drill.statuses()) == len(drill.tasks),
        timeout_s=SETTLE_S,
        what="every drill task done",
    )
    views = []
    for task_id, seconds in drill.tasks.items():
        problem: list[str] = []

        def complete(task_id: str = task_id, problem: list[str] = problem) -> dict[str, Any] | None:
            view = drill.stack.task(drill.admin, task_id)
            problem[:] = [history_problem(view) or ""]
            return view if not problem[0] else None

        try:
            view = wait_until(complete, timeout_s=HISTORY_S, interval_s=0.2, what=f"history of {task_id}")
        except AssertionError as exc:
            raise AssertionError(f"{task_id}: {problem[0]}") from exc
        assert view.get("result") == {"sleptS": seconds}, view
        views.append(view)
    wait_until(
        lambda: all(a["running"] == 0 for a in _agents(drill.stack, drill.admin).values()),
        timeout_s=30,
        what="every agent's slots back to zero",
    )
    return views


def history_problem(view: dict[str, Any]) -> str | None:
    """What is wrong with a finished task's recorded history, or None when it is complete and in order."""
    events = sorted(view.get("events") or [], key=lambda e: e["seq"])
    seqs = [e["seq"] for e in events]
    # Progress is kept for live replay only, so its seqs are missing from the stored history; every status
    # change is stored, and the move check below finds a missing one.
    if not seqs or seqs[0] != 1 or any(a >= b for a, b in itertools.pairwise(seqs)):
        return f"history out of order: seqs {seqs}"
    if events[-1]["type"] != "task/status" or events[-1]["status"] != "done":
        return f"history does not end with done: {events[-1]}"
    statuses = [(e["status"], e["attempt"]) for e in events if e["type"] == "task/status"]
    if not statuses or statuses[0][0] != "queued" or statuses[-1][0] != "done":
        return f"history does not run from queued to done: {statuses}"
    if sum(1 for status, _ in statuses if status == "done") != 1:
        return f"more than one done: {statuses}"
    for (before, _), (after, _) in itertools.pairwise(statuses):
        if (before, after) not in _MOVES:
            return f"{before} -> {after} out of order: {statuses}"
    assigned = [attempt for status, attempt in statuses if status == "assigned"]
    if assigned != list(range(1, len(assigned) + 1)) or view["attempt"] != assigned[-1]:
        return f"attempts do not count up to {view['attempt']}: {statuses}"
    return None


def _agents(stack: Stack, admin: str) -> dict[str, dict[str, Any]]:
    with stack.http(admin) as client:
        response = client.get("/api/agents", params={"pageSize": 100})
        response.raise_for_status()
        body = response.json()
    items = body["items"] if isinstance(body, dict) else body
    return {a["id"]: a for a in items if a["name"].startswith("drill-")}

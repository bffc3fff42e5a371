"""The operator's fault drills, scaled down: two APIs, two schedulers, three workers, a fault at 25 % done.

Each drill asserts what `check_drill` keeps: every task done, none lost, exactly one (the right) recorded
result, a complete history in order, slots back to zero.
"""

from __future__ import annotations

import signal
import time
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import StackFactory
from tests.e2e.drill_support import check_drill, start_drill, wait_quarter_done
from tests.e2e.stack import HEARTBEAT_TIMEOUT_S, wait_until

# Several API processes on one database: a PostgreSQL deployment (SQLite is the single-process dev store), so
# without PostgreSQL these are skipped, and the run's summary says so (CI requires it).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300), pytest.mark.usefixtures("postgres_admin_url")]


def test_drill_worker_kill_9_and_restart_under_the_same_id(make_stack: StackFactory) -> None:
    """The restarted process' first heartbeat lists nothing: its old running attempts are requeued at once.

    Lease and grace are long here (60 s / 45 s), so only the reconnect reconciliation can free them in time.
    """
    stack = make_stack(TASKYARD_API_HEARTBEAT_TIMEOUT_S="60", TASKYARD_API_RECONNECT_GRACE_S="45")
    # Progress makes the attempts `running` at once; a quiet quick task stays `assigned` until its result, and
    # an assigned attempt is not reconciled (its submit is redelivered to the new process instead).
    drill = start_drill(stack, progress_every_s=0.03)
    wait_quarter_done(drill)
    victim = drill.workers[0]
    # Killed while it holds a running attempt, so the reconnect has something to reconcile.
    drill.freeze_while_running(victim)
    stack.kill(victim.proc, signal.SIGKILL)
    killed_at = time.monotonic()
    drill.start_worker(0, name="worker-0-restarted")
    check_drill(drill)
    assert time.monotonic() - killed_at < 45, "the stranded attempts waited for the grace, not the reconnect"
    logs = "".join(p.log() for p in stack.procs if p.name.startswith("api"))
    assert "reconciled on connect" in logs


def test_drill_api_replica_kill_9(make_stack: StackFactory) -> None:
    """Workers on the killed replica reconnect (it comes back on its port), resend unacknowledged results."""
    stack = make_stack()
    drill = start_drill(stack, worker_apis=[1, 1, 0])
    wait_quarter_done(drill)
    replica = next(p for p in stack.procs if p.name == "api-2")
    port = urlsplit(drill.apis[1]).port
    stack.kill(replica, signal.SIGKILL)
    time.sleep(1.0)  # the supervisor's restart delay
    stack.start_api(name="api-2-restarted", port=port)
    views = check_drill(drill)
    for worker in drill.workers[:2]:
        assert worker.proc.alive(), worker.proc.log()[-3000:]
        wait_until(
            lambda worker=worker: worker.proc.log().count("agent connected") >= 2,
            timeout_s=30,
            what=f"{worker.name} reconnected",
        )
    assert all(view.get("result") is not None for view in views)


def test_drill_scheduler_kill_9(make_stack: StackFactory) -> None:
    stack = make_stack()
    drill = start_drill(stack)
    wait_quarter_done(drill)
    stack.kill(next(p for p in stack.procs if p.name == "scheduler"), signal.SIGKILL)
    check_drill(drill)


def test_drill_frozen_worker_past_its_timeout(make_stack: StackFactory) -> None:
    """SIGSTOP past the heartbeat timeout: its tasks go elsewhere; thawed, its late results are refused."""
    stack = make_stack()
    drill = start_drill(stack)
    wait_quarter_done(drill)
    frozen = drill.workers[0].proc
    stack.kill(frozen, signal.SIGSTOP)
    try:
        time.sleep(2 * HEARTBEAT_TIMEOUT_S + 1)
    finally:
        stack.kill(frozen, signal.SIGCONT)
    views = check_drill(drill)
    assert frozen.alive()
    assert any(view["attempt"] >= 2 for view in views), "nothing was taken back from the frozen worker"

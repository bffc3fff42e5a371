"""A bounded schemathesis run against a real API process: no 5xx, only documented statuses and bodies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import ADMIN_EMAIL, ADMIN_PASSWORD, Stack

pytestmark = pytest.mark.timeout(600)

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
MAX_EXAMPLES = "3"
"""Per operation and phase; with `--max-time` per pass, the whole run stays around two minutes here."""


def _schemathesis(url: str, token: str, workdir: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.fail("schemathesis is missing: `make install` installs the dev group")
    argv = [
        str(st),
        "run",
        f"{url}/schema/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        MAX_EXAMPLES,
        "--phases",
        "examples,coverage,fuzzing",
        "--mode",
        "positive",
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--seed",
        "1",
        "--request-timeout",
        "60",
        "--max-time",
        "45",
        *selection,
    ]
    # Run in the test's folder: schemathesis keeps state in ./.schemathesis.
    return subprocess.run(argv, capture_output=True, text=True, timeout=400, check=False, cwd=workdir)


def _report(result: subprocess.CompletedProcess[str]) -> str:
    """The run's output with generated payloads clipped (one can be megabytes of one character)."""
    lines = [line if len(line) <= 300 else line[:300] + "..." for line in result.stdout.splitlines()]
    return "\n".join(lines)[-12000:] + result.stderr[-2000:]


def test_schemathesis_finds_no_server_error_nor_undocumented_answer(stack: Stack) -> None:
    # The planner routes wait for an LLM agent: a worker with the offline provider answers them.
    url = stack.start_api(name="api-fuzz", TASKYARD_API_PLANNER_WAIT_S="30")
    token = stack.create_admin()
    # Logged in now: the run's login attempts will have rate-limited this address by the end.
    logout_token = stack.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    agent_id, agent_token = stack.create_agent(capabilities=["llm"], concurrency=16, name="llm")
    stack.start_worker(agent_id, agent_token, concurrency=16)
    # Three passes so that destructive calls cannot spoil the others' setup: the planner first, while
    # its worker is there (the agent routes may rotate or delete its agent later); then everything
    # else but logout, which would revoke the token the run uses; then logout alone.
    passes = [
        (token, ["--include-tag", "planner"]),
        (token, ["--exclude-tag", "planner", "--exclude-operation-id", "authLogout"]),
        (logout_token, ["--include-operation-id", "authLogout"]),
    ]
    for bearer, selection in passes:
        result = _schemathesis(url, bearer, stack.workdir, *selection)
        assert result.returncode == 0, _report(result)
        assert "selected / " in result.stdout
    fuzzed_log = next(p for p in stack.procs if p.name == "api-fuzz").log()
    assert "status=500" not in fuzzed_log
    assert "Traceback" not in fuzzed_log

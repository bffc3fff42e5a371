"""Start taskyard for a bench run: migrate, create an admin, then the API, a scheduler and workers.

Every process is started through its documented entry point, with its output in the run's log dir.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Proc, free_port, port_open, wait_until

BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StackConfig:
    redis_url: str
    database_url: str
    log_dir: Path
    data_dir: Path
    prefix: str = field(default_factory=lambda: f"bench:{secrets.token_hex(4)}")
    admin_email: str = "bench-admin@example.com"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))


class TaskyardStack:
    """API replicas, one scheduler and any number of workers, all on our Redis and our database.

    The bench's REST calls and its own sockets use replica 0; worker i connects to replica i mod N,
    so with several replicas the events cross replicas through Redis as in production.
    """

    def __init__(self, config: StackConfig, *, api_replicas: int = 1, extra_env: dict[str, str] | None = None) -> None:
        self.config = config
        self.ports = [free_port() for _ in range(max(1, api_replicas))]
        self.procs: list[Proc] = []
        self._extra_env = dict(extra_env or {})

    def pids(self, prefix: str) -> list[int]:
        """Leader pids of the processes whose name starts with `prefix` (`api`, `scheduler`, `worker`)."""
        return [proc.pid for proc in self.procs if proc.name.startswith(prefix) and proc.alive()]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def ws_url(self) -> str:
        return self.replica_ws_url(0)

    def replica_ws_url(self, index: int) -> str:
        return f"ws://127.0.0.1:{self.ports[index % len(self.ports)]}/ws"

    def env(self) -> dict[str, str]:
        cfg = self.config
        return (
            dict(
                os.environ,
                APP_ENV="dev",
                DATABASE_URL=cfg.database_url,
                REDIS_URL=cfg.redis_url,
                JWT_SECRET=cfg.jwt_secret,
                TASKYARD_REDIS_PREFIX=cfg.prefix,
                TASKYARD_DATA_DIR=str(cfg.data_dir),
                # The bench measures the pipeline, not the submission rate limit (600/min per user by default).
                TASKYARD_API_TASK_SUBMIT_PER_USER="100000000",
                # A long run (--n 100000) must not outlive the watcher's access token (15 min by default).
                TASKYARD_API_ACCESS_TOKEN_TTL_S="7200",
                PYTHONPATH=str(REPO_ROOT),
            )
            | self._extra_env
        )

    def _run_once(self, name: str, argv: list[str], *, stdin: bytes = b"", timeout_s: float = 120) -> None:
        log = self.config.log_dir / f"taskyard-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            done = subprocess.run(
                argv,
                env=self.env(),
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                input=stdin,
                timeout=timeout_s,
                check=False,
            )
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"`{' '.join(argv[:2])} ...` exited {done.returncode}; {log}:\n{tail}")

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Proc:
        proc = Proc(
            name,
            argv,
            log_path=self.config.log_dir / f"taskyard-{name}.log",
            env={**self.env(), **(extra_env or {})},
            cwd=REPO_ROOT,
        ).start()
        self.procs.append(proc)
        # For profiling a run from outside (py-spy record --pid ...).
        with (self.config.log_dir / "pids.txt").open("a") as pids:
            pids.write(f"{name} {proc.pid}\n")
        return proc

    def prepare(self) -> None:
        """Migrate the database and create the admin (both one-shot commands)."""
        self._run_once("migrate", [str(BIN / "taskyard"), "migrate"])
        self._run_once(
            "create-admin",
            [str(BIN / "taskyard"), "create-admin", "--email", self.config.admin_email, "--password-stdin"],
            stdin=f"{self.config.admin_password}\n".encode(),
        )

    def start_api_and_scheduler(self) -> None:
        apis = [
            self._spawn(
                f"api-{i}" if i else "api", [str(BIN / "taskyard"), "api", "--host", "127.0.0.1", "--port", str(port)]
            )
            for i, port in enumerate(self.ports)
        ]
        scheduler = self._spawn("scheduler", [str(BIN / "python"), "-m", "scheduler"])

        def api_up() -> bool:
            for proc in [*apis, scheduler]:
                proc.check_alive()
            return all(port_open("127.0.0.1", port) for port in self.ports)

        wait_until(api_up, timeout_s=60, what="the taskyard API to listen")

    def start_worker(
        self, index: int, agent_id: str, agent_token: str, concurrency: int, env: dict[str, str] | None = None
    ) -> Proc:
        # The token goes in the environment, not on the command line where `ps` shows it.
        argv = [str(BIN / "python"), "-m", "worker", "--url", self.replica_ws_url(index), "--agent-id", agent_id]
        argv += ["--concurrency", str(concurrency)]
        return self._spawn(f"worker-{index}", argv, {"TASKYARD_WORKER_AGENT_TOKEN": agent_token, **(env or {})})

    def check_alive(self) -> None:
        for proc in self.procs:
            proc.check_alive()

    def stop(self) -> None:
        # Workers first (they drain), then the scheduler, then the API.
        for proc in reversed(self.procs):
            proc.stop(timeout_s=10)
        self.procs.clear()

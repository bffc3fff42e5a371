"""The driver side of the bench's client processes (see `bench.childio`): start, read, command, stop.

A client runs in its own process group, so stopping it (or metering its CPU) covers what it forked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from bench.meter import Meter


class ChildError(RuntimeError):
    """A client process failed, said something unexpected or was too slow."""


class Child:
    """One client process whose stdout carries line JSON messages."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> None:
        self.name = name
        self._argv = list(argv)
        self._env = dict(env)
        self._cwd = cwd
        self._log_path = log_path
        self._log: IO[bytes] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ChildError(f"{self.name} was not started")
        return self._proc.pid

    async def start(self) -> Child:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self._log_path.open("ab")
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            env=self._env,
            cwd=self._cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
            limit=1 << 26,  # a result line carries every sample
        )
        return self

    async def message(self, key: str, timeout_s: float) -> dict[str, Any]:
        """The next JSON line holding `key`; ChildError when the process ends or `timeout_s` passes."""
        if self._proc is None or self._proc.stdout is None:
            raise ChildError(f"{self.name} was not started")
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    line = await self._proc.stdout.readline()
                    if not line:
                        code = await self._proc.wait()
                        raise ChildError(f"{self.name} exited ({code}) before `{key}`; log {self._log_path}")
                    if line.startswith(b"{"):
                        msg: dict[str, Any] = json.loads(line)
                        if "error" in msg:
                            raise ChildError(f"{self.name}: {msg['error']}")
                        if key in msg:
                            return msg
        except TimeoutError:
            raise ChildError(f"{self.name}: no `{key}` within {timeout_s:.0f}s; log {self._log_path}") from None

    async def send(self, command: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise ChildError(f"{self.name} was not started")
        with contextlib.suppress(ConnectionError):
            self._proc.stdin.write(command.encode() + b"\n")
            await self._proc.stdin.drain()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """`stop` on stdin, then SIGTERM / SIGKILL to the process group if it lingers."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            await self.send("stop")
            for sig, wait_s in ((None, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), wait_s)
                    break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it forked and left behind
        if self._log is not None:
            self._log.close()
            self._log = None


async def start_all(children: list[Child], *, ready_timeout_s: float) -> list[Any]:
    """Start every child and wait until each said `ready` (the caller then snapshots and calls `go_all`)."""
    await asyncio.gather(*(child.start() for child in children))
    readies = await asyncio.gather(*(child.message("ready", ready_timeout_s) for child in children))
    return [ready["ready"] for ready in readies]


async def go_all(children: list[Child], *, timeout_s: float) -> list[dict[str, Any]]:
    """`go` to every child at once; their `result` payloads in the same order."""
    await asyncio.gather(*(child.send("go") for child in children))
    answers = await asyncio.gather(*(child.message("result", timeout_s) for child in children))
    return [answer["result"] for answer in answers]


async def stop_all(children: list[Child]) -> None:
    await asyncio.gather(*(child.stop() for child in children), return_exceptions=True)


async def measured(
    children: list[Child], meter: Meter, *, units: int, unit: str, timeout_s: float, ready_timeout_s: float = 120.0
) -> tuple[list[dict[str, Any]], dict[str, Any], list[Any]]:
    """Start the clients, open the cost window, run them, close the window: (results, cost, ready payloads)."""
    readies = await start_all(children, ready_timeout_s=ready_timeout_s)
    before = await meter.open_window()
    results = await go_all(children, timeout_s=timeout_s)
    cost = await meter.close_window(before, units=units, unit=unit)
    await stop_all(children)
    return results, cost, readies

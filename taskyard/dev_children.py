"""The child processes of `taskyard dev`: start, restart with backoff, stop in reverse order.

A child that exits without being asked to (a worker whose agent was rotated or deleted, a crashed
scheduler, a killed API) is started again after a delay that doubles while it keeps dying young
(1 s, 2 s, 4 s ... up to 30 s) and resets once it stays up. Only a child that dies young
`GIVE_UP_AFTER` times in a row stops the stack: that is a configuration problem, not bad luck.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from taskyard.embedded import EmbeddedRedis, die_with_parent

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

__all__ = ("GIVE_UP_AFTER", "Child", "Stack", "restart_delay_s", "say", "supervise")

GIVE_UP_AFTER = 5
"""Consecutive young deaths after which the supervisor stops the stack instead of restarting."""
YOUNG_S = 10.0
"""A child that ran less than this before exiting died young (it counts towards giving up)."""
MAX_DELAY_S = 30.0
POLL_S = 0.2


def say(message: str) -> None:
    print(f"[taskyard dev] {message}", file=sys.stderr, flush=True)


def restart_delay_s(young_deaths: int) -> float:
    """1 s after a child that had been up a while; doubling per young death in a row, at most 30 s."""
    return min(MAX_DELAY_S, float(2 ** max(0, young_deaths)))


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)
    young_deaths: int = 0
    restart_at: float | None = None
    """Set while the child is dead and waiting for its restart."""
    prepare: Callable[[Child], None] | None = None
    """Called before a restart (the worker refreshes its agent credentials here); may raise to postpone."""


@dataclass
class Stack:
    children: list[Child] = field(default_factory=list)
    redis: EmbeddedRedis | None = None


def _popen(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and modules
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        # Own process group: a terminal Ctrl-C reaches only the supervisor, which stops children in order.
        start_new_session=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - the supervisor runs no threads
    )


def spawn(
    stack: Stack, name: str, argv: list[str], env: dict[str, str], prepare: Callable[[Child], None] | None = None
) -> Child:
    child = Child(name, argv, dict(env), _popen(argv, dict(env)), prepare=prepare)
    stack.children.append(child)
    say(f"started {name} (pid {child.process.pid})")
    return child


def dead_child(stack: Stack) -> Child | None:
    for child in stack.children:
        if child.process.poll() is not None:
            return child
    return None


def _on_exit(child: Child, now: float) -> bool:
    """Schedule the restart of a child that just exited; False when it is time to give up."""
    young = now - child.started_at < YOUNG_S
    child.young_deaths = child.young_deaths + 1 if young else 0
    code = child.process.returncode
    if child.young_deaths >= GIVE_UP_AFTER:
        say(
            f"{child.name} (pid {child.process.pid}) exited with code {code}, "
            f"dying young {child.young_deaths} times in a row; giving up and stopping the stack"
        )
        return False
    delay = restart_delay_s(child.young_deaths)
    say(f"{child.name} (pid {child.process.pid}) exited with code {code}; restarting it in {delay:.0f} s")
    child.restart_at = now + delay
    return True


def _restart(child: Child, now: float) -> None:
    if child.prepare is not None:
        try:
            child.prepare(child)
        except Exception as exc:
            child.young_deaths += 1
            delay = restart_delay_s(child.young_deaths)
            say(f"cannot restart {child.name} yet ({type(exc).__name__}: {exc}); trying again in {delay:.0f} s")
            child.restart_at = now + delay
            return
    child.process = _popen(child.argv, child.env)
    child.started_at = now
    child.restart_at = None
    say(f"restarted {child.name} (pid {child.process.pid})")


def supervise(stack: Stack, stop: threading.Event, clock: Callable[[], float] = time.monotonic) -> int:
    """Keep every child running until `stop` is set (0), or until one keeps dying young (1)."""
    while not stop.is_set():
        now = clock()
        for child in stack.children:
            if child.restart_at is None:
                if child.process.poll() is not None and not _on_exit(child, now):
                    return 1
            elif now >= child.restart_at:
                _restart(child, now)
        stop.wait(POLL_S)
    return 0

"""Scheduler settings: the fields only; `protocol.config` reads and checks them.

Names: `REDIS_URL`, `TASKYARD_REDIS_PREFIX`, and `TASKYARD_SCHEDULER_<FIELD>` for the rest. The YAML file
`TASKYARD_CONFIG` names (the API's) is read too: its `scheduler` section, and `redis.url` / `redis.prefix`
from its `redis` section, so one file configures both; a variable wins over the file.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from protocol.config import AT_LEAST_ONE, POSITIVE, load_group
from scheduler.errors import SchedulerSettingsError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("SchedulerSettings", "env_name", "load_settings", "read_config_file")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    """Redis to use (`REDIS_URL`); may hold a password, so it stays out of repr."""
    prefix: str = "taskyard"
    """Prefix of every key (`TASKYARD_REDIS_PREFIX`); a hash tag in it pins a shard to one slot."""
    sweep_interval_s: Annotated[float, POSITIVE] = 1.0
    """How often expired agents, passed deadlines and due timers are swept."""
    assign_timeout_s: Annotated[float, POSITIVE] = 15.0
    """How long an assigned task may wait for `task/accept` before it is taken back."""
    max_losses: Annotated[int, AT_LEAST_ONE] = 3
    """Times a task may lose its agent (gone past its lease or reconnect grace, no answer to the submit,
    restarted without it) before it fails with `worker_lost`. Losses do not use up `maxAttempts`."""
    output_keep_s: Annotated[float, POSITIVE] = 120.0
    """How long Redis keeps a finished task's output for the reconciler, in case its commit was lost."""
    retry_base_s: Annotated[float, POSITIVE] = 1.0
    """Backoff base: attempt n waits a random time in [0, min(max, base * 2^(n-1))]."""
    retry_max_s: Annotated[float, POSITIVE] = 60.0
    """Backoff cap."""
    dispatch_batch: Annotated[int, AT_LEAST_ONE] = 100
    """Most tasks one dispatch script call hands out."""
    sweep_batch: Annotated[int, AT_LEAST_ONE] = 500
    """Most agents or tasks one sweep script call handles (it repeats while there are more)."""
    log_level: str = "INFO"
    """Level for `python -m scheduler`."""
    history_maxlen: Annotated[int, AT_LEAST_ONE] = 1000
    """Approximate bound on each task's event history (watcher replay)."""
    events_maxlen: Annotated[int, AT_LEAST_ONE] = 100_000
    """Approximate bound on the global events stream (the recorder's backlog)."""
    inbox_maxlen: Annotated[int, AT_LEAST_ONE] = 10_000
    """Approximate bound on each agent inbox."""
    task_ttl_s: Annotated[int, AT_LEAST_ONE] = 86_400
    """How long a finished task's hash and history stay in Redis."""
    inbox_ttl_s: Annotated[int, AT_LEAST_ONE] = 86_400
    """Idle expiry of an agent inbox (refreshed by heartbeats and new entries)."""
    agent_keep_s: float = 3600.0
    """How long agent keys outlive the lease when nobody reaps them (the reaper deletes them first)."""
    instance: str = field(default_factory=socket.gethostname)
    """Name of this process' liveness key (`--check` reads the one of its own host)."""


_SPECIAL = {"redis_url": "REDIS_URL", "prefix": "TASKYARD_REDIS_PREFIX"}


def env_name(field_name: str) -> str:
    return _SPECIAL.get(field_name, "TASKYARD_SCHEDULER_" + field_name.upper())


def _level(raw: str) -> str:
    if raw.upper() not in LOG_LEVELS:
        raise ValueError("unknown level (" + ", ".join(LOG_LEVELS) + ")")
    return raw.upper()


def read_config_file(path: str, problems: list[str]) -> dict[str, Any]:
    """The YAML file `TASKYARD_CONFIG` names, as a mapping of sections; {} and a problem when unreadable."""
    import yaml  # only processes that are given a file need PyYAML

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        problems.append(f"TASKYARD_CONFIG: cannot read {path!r} ({type(exc).__name__})")
        return {}
    if not isinstance(data, dict):
        problems.append("TASKYARD_CONFIG: the file must hold a mapping of sections")
        return {}
    return data


def _section(file_data: Mapping[str, Any], name: str, problems: list[str]) -> dict[str, Any]:
    section = file_data.get(name) or {}
    if not isinstance(section, dict):
        problems.append(f"TASKYARD_CONFIG: section {name!r} must be a mapping")
        return {}
    return section


def load_settings(environ: Mapping[str, str], file_data: Mapping[str, Any] | None = None) -> SchedulerSettings:
    """Build settings from `environ` and the config file (`file_data` when the caller read it already);
    raises `SchedulerSettingsError` listing every bad variable or file value."""
    problems: list[str] = []
    read_here = file_data is None
    if file_data is None:
        path = environ.get("TASKYARD_CONFIG", "").strip()
        file_data = read_config_file(path, problems) if path else {}
    section = _section(file_data, "scheduler", problems)
    # The API reports a malformed `redis` section itself; the scheduler alone must too.
    redis_section = _section(file_data, "redis", problems if read_here else [])
    for ours, theirs in (("redis_url", "url"), ("prefix", "prefix")):
        if theirs in redis_section:
            section.setdefault(ours, redis_section[theirs])
    settings = load_group(
        SchedulerSettings,
        environ,
        problems,
        env_name=env_name,
        section=section,
        section_name="scheduler",
        checks={"log_level": _level},
    )
    if problems:
        raise SchedulerSettingsError(problems)
    return settings

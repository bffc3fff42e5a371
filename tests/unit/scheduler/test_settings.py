"""Scheduler settings from a plain mapping (never os.environ)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.errors import SchedulerSettingsError
from scheduler.settings import load_settings


def test_defaults_run_the_embedded_stack() -> None:
    s = load_settings({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.prefix, s.sweep_interval_s, s.assign_timeout_s) == ("taskyard", 1.0, 15.0)
    assert (s.retry_base_s, s.retry_max_s, s.dispatch_batch, s.log_level) == (1.0, 60.0, 100, "INFO")


def test_environment_overrides() -> None:
    s = load_settings(
        {
            "REDIS_URL": "redis://:secret@redis:6379/2",
            "TASKYARD_REDIS_PREFIX": "ty:{s1}",
            "TASKYARD_SCHEDULER_SWEEP_INTERVAL_S": "0.25",
            "TASKYARD_SCHEDULER_DISPATCH_BATCH": "7",
            "TASKYARD_SCHEDULER_LOG_LEVEL": "debug",
        }
    )
    assert (s.prefix, s.sweep_interval_s, s.dispatch_batch) == ("ty:{s1}", 0.25, 7)
    assert "secret" not in repr(s)


def test_every_bad_variable_is_listed() -> None:
    with pytest.raises(SchedulerSettingsError) as info:
        load_settings(
            {
                "TASKYARD_SCHEDULER_SWEEP_INTERVAL_S": "often",
                "TASKYARD_SCHEDULER_DISPATCH_BATCH": "0",
                "TASKYARD_SCHEDULER_LOG_LEVEL": "loud",
            }
        )
    assert len(info.value.problems) == 3


def test_the_config_file_sets_the_scheduler_and_shares_the_apis_redis_section(tmp_path: Path) -> None:
    config = tmp_path / "taskyard.yaml"
    config.write_text(
        "redis:\n  url: redis://file-redis:6379/3\n  prefix: from-file\n"
        "scheduler:\n  sweep_interval_s: 0.5\n  dispatch_batch: 9\n"
    )
    s = load_settings({"TASKYARD_CONFIG": str(config), "TASKYARD_SCHEDULER_DISPATCH_BATCH": "11"})
    assert (s.redis_url, s.prefix) == ("redis://file-redis:6379/3", "from-file")
    assert (s.sweep_interval_s, s.dispatch_batch) == (0.5, 11)  # a variable wins over the file


def test_bad_file_values_and_fields_are_listed(tmp_path: Path) -> None:
    config = tmp_path / "taskyard.yaml"
    config.write_text("redis: [1]\nscheduler:\n  sweep_interval_s: -1\n  no_such_field: 1\n")
    with pytest.raises(SchedulerSettingsError) as info:
        load_settings({"TASKYARD_CONFIG": str(config)})
    text = str(info.value)
    assert "section 'redis' must be a mapping" in text
    assert "scheduler.sweep_interval_s" in text
    assert "unknown field scheduler.no_such_field" in text
    with pytest.raises(SchedulerSettingsError, match="cannot read"):
        load_settings({"TASKYARD_CONFIG": str(tmp_path / "missing.yaml")})

"""Errors the scheduler package raises.

SchedulerError
├── SchedulerSettingsError   bad configuration (lists every bad variable)
└── ScriptReplyError         a Lua script answered something its wrapper does not understand
"""

from __future__ import annotations

__all__ = ("SchedulerError", "SchedulerSettingsError", "ScriptReplyError")


class SchedulerError(Exception):
    """Base of every scheduler error."""


class SchedulerSettingsError(SchedulerError):
    """The environment holds invalid scheduler settings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid scheduler settings: " + "; ".join(problems))
        self.problems = problems


class ScriptReplyError(SchedulerError):
    """A script replied with a shape its wrapper does not expect (a bug, or a foreign script)."""

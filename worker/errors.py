"""The worker's exceptions: control flow a handler raises, and the runtime's own errors.

Hierarchy::

    Exception
     ├── Retry                      handler control flow: retry this task later (no error log)
     ├── Fatal                      handler control flow: fail this task, never retry
     └── WorkerError                the runtime's own failures
          ├── WorkerSettingsError   bad configuration, found at startup (lists every bad variable)
          ├── RegistryError         a handler cannot be registered or found
          ├── InputValidationError  a task's input does not match the handler's declared type
          ├── AuthenticationError   the server refused the agent's credentials (not retried)
          └── ConnectionLostError   the socket could not be opened or was lost (retried with backoff)

Nothing here imports the WebSocket library: `worker.connection` translates its errors into these.
"""

from __future__ import annotations

__all__ = (
    "AuthenticationError",
    "ConnectionLostError",
    "Fatal",
    "InputValidationError",
    "RegistryError",
    "Retry",
    "WorkerError",
    "WorkerSettingsError",
)


class Retry(Exception):  # noqa: N818 - the SDK's documented control-flow name (arq, dramatiq)
    """Ask for this task to run again after `delay_s` seconds (the server's backoff when None).

    It still counts as an attempt: the server fails the task once its attempts are used up. `error` is the
    code reported in `task/error` (e.g. `llm_rate_limited`).
    """

    def __init__(self, delay_s: float | None = None, message: str = "retry requested", *, error: str = "retry") -> None:
        super().__init__(message)
        self.delay_s = delay_s
        self.message = message
        self.error = error


class Fatal(Exception):  # noqa: N818 - the SDK's documented control-flow name (Hatchet NonRetryable)
    """Fail this task now, without a retry; `error` is the code reported in `task/error`."""

    def __init__(self, message: str = "fatal error", *, error: str = "fatal") -> None:
        super().__init__(message)
        self.message = message
        self.error = error


class WorkerError(Exception):
    """Base class of the runtime's own errors."""


class WorkerSettingsError(WorkerError):
    """The configuration is invalid; `problems` lists every bad variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid worker settings: " + "; ".join(problems))
        self.problems = problems


class RegistryError(WorkerError):
    """A handler cannot be registered (duplicate type, bad signature) or loaded."""


class InputValidationError(WorkerError):
    """A task's input does not decode into the handler's declared input type."""


class AuthenticationError(WorkerError):
    """The server refused the agent's credentials; retrying with the same ones cannot help."""

    def __init__(self, message: str, *, error: str = "unauthorized") -> None:
        super().__init__(message)
        self.message = message
        self.error = error


class ConnectionLostError(WorkerError):
    """The WebSocket could not be opened, or closed; the runtime reconnects with backoff."""

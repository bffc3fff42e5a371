"""Process logging for the API entry point: one access log (ours), no credentials in any line.

uvicorn logs every WebSocket handshake on `uvicorn.error` with the query string, where watchers and
agents may carry their tokens (`?token=`, `?agent_token=`); its HTTP access log does the same for
REST. Both are dropped here: our middleware writes the one access line, without the query. A last
filter on the handlers masks anything shaped like a credential that some other logger lets through.
"""

from __future__ import annotations

import logging
import re
import time

__all__ = ("DropUvicornHandshakes", "RedactCredentials", "configure_logging")

# `token=...`, `agent_token=...`, `access_token=...`, `refresh_token=...`, `password=...` (query or key=value).
_QUERY_SECRET = re.compile(r"(?i)\b((?:agent_|access_|refresh_)?token|password|secret)=([^&\s\"']+)")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
# Every match of either pattern holds one of these (lower-cased): a record without any skips both scans.
_SECRET_MARKERS = ("token=", "password=", "secret=", "bearer")
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class DropUvicornHandshakes(logging.Filter):
    """Drop uvicorn's `"WebSocket /ws?..." [accepted]` lines: they print the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and '"WebSocket %s"' in record.msg)


class RedactCredentials(logging.Filter):
    """Mask token-shaped values in a formatted record (defence in depth; nothing should log them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        lowered = message.lower()
        if not any(marker in lowered for marker in _SECRET_MARKERS):
            return True
        cleaned = _BEARER.sub("Bearer [REDACTED]", _QUERY_SECRET.sub(r"\1=[REDACTED]", message))
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


class _SecondCachedFormatter(logging.Formatter):
    """The default `asctime` (`2026-01-02 03:04:05,678`, local time), formatted once per second, not per record
    (one access line per request)."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._prefix = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._prefix = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._prefix},{int(record.msecs):03d}"


def configure_logging(level: str) -> None:
    """Root handler with our format and the redaction filter; uvicorn's loggers go through it, minus the
    handshake lines and its access log (the app's access log replaces it).

    Records skip what the format never prints (the caller's file and line, process and thread facts),
    which is most of a record's cost besides the write."""
    logging.basicConfig(level=level, format=_FORMAT)
    logging._srcfile = None  # the logging HOWTO's switch: no caller lookup
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for handler in logging.getLogger().handlers:
        if type(handler.formatter) is logging.Formatter and handler.formatter._fmt == _FORMAT:
            handler.setFormatter(_SecondCachedFormatter(_FORMAT))
        handler.addFilter(RedactCredentials())
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addFilter(DropUvicornHandshakes())
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True

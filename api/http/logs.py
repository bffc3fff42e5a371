"""Process logging for the API entry point: one access log (ours), no credentials in any line.

uvicorn logs every WebSocket handshake on `uvicorn.error` with the query string, where watchers and
agents may carry their tokens (`?token=`, `?agent_token=`); its HTTP access log does the same for
REST. Both are dropped here: our middleware writes the one access line, without the query. A last
filter on the handlers masks anything shaped like a credential that some other logger lets through.
"""

from __future__ import annotations

import logging
import re

__all__ = ("DropUvicornHandshakes", "RedactCredentials", "configure_logging")

# `token=...`, `agent_token=...`, `access_token=...`, `refresh_token=...`, `password=...` (query or key=value).
_QUERY_SECRET = re.compile(r"(?i)\b((?:agent_|access_|refresh_)?token|password|secret)=([^&\s\"']+)")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")


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
        cleaned = _BEARER.sub("Bearer [REDACTED]", _QUERY_SECRET.sub(r"\1=[REDACTED]", message))
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


def configure_logging(level: str) -> None:
    """Root handler with our format and the redaction filter; uvicorn's loggers go through it, minus the
    handshake lines and its access log (the app's access log replaces it)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactCredentials())
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addFilter(DropUvicornHandshakes())
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True

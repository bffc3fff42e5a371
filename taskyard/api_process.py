"""`taskyard api`'s server: one uvicorn process, or several sharing the listen socket.

With `TASKYARD_API_PROCESSES` (or `--processes`) above 1, uvicorn's supervisor binds the port once and spawns
that many processes; each builds the app through `app()` from the environment it inherits, so each is a full
API replica (its own database and Redis connections, recorder, result writer and fan-out), exactly as
separate replicas behind a load balancer are. The kernel spreads new connections among them.
"""

from __future__ import annotations

import gc
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from litestar import Litestar

    from api.settings import ApiSettings

__all__ = ("GC_YOUNG_THRESHOLD", "app", "run", "share_generated_keys", "tune_gc")

_FACTORY = f"{__name__}:app"


def app() -> Litestar:
    """The app of one spawned process: settings from its environment (checked by the parent before it spawned)."""
    from api.app import create_app
    from api.http.logs import configure_logging
    from api.settings import load_settings

    settings = load_settings(os.environ)
    configure_logging(settings.log_level)
    tune_gc()
    return create_app(settings)


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young-generation collections (CPython's default is 700)."""


def tune_gc() -> None:
    """Collect the young generation less often. Decoding frames and rows allocates many short-lived containers;
    at the default threshold the collector ran every few hundred and was the API's largest cost while streaming
    (~40 % of its busy time in a native profile). At 50,000 the API used ~20 % less CPU per streamed event and
    per batch task (docs/benchmarks.md); the memory held meanwhile is a few MB. Set per process, not in the
    app factory, so tests that build apps keep the interpreter's default."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def share_generated_keys(settings: ApiSettings, environ: MutableMapping[str, str]) -> None:
    """Put keys that dev mode generated into `environ`, so every spawned process signs and seals with the same ones.

    They are normally kept in the data dir and read back, but when it is not writable each process would
    generate its own, and a token issued by one process would be refused by the next.
    """
    from api.settings.groups import env_name

    generated = {
        env_name("auth", "jwt_secret"): settings.auth.jwt_secret,
        env_name("planner", "secrets_key"): settings.planner.secrets_key,
        env_name("planner", "llm_seal_key"): settings.planner.llm_seal_key,
    }
    for name, secret in generated.items():
        if secret is not None and not environ.get(name, "").strip():
            environ[name] = secret.reveal()


def run(settings: ApiSettings, *, host: str, port: int, graceful_shutdown_s: int, processes: int) -> None:
    """Serve until stopped; SIGTERM drains connections for up to `graceful_shutdown_s` (in every process)."""
    import uvicorn

    from api.app import create_app
    from api.http.joined_writes import JoinedHeadHttpProtocol
    from api.ws.direct import DirectWebSocketProtocol
    from protocol.limits import MAX_AGENT_FRAME_BYTES

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        # uvicorn's default is 16 MiB; the largest legal frame is an agent's 1 MiB.
        "ws_max_size": MAX_AGENT_FRAME_BYTES,
        # Frames are small JSON: compression costs more CPU than it saves (a measured ~3 % of the API).
        "ws_per_message_deflate": False,
        # uvicorn's sans-I/O websockets protocol, plus a hook for writing frames to the transport directly.
        "ws": DirectWebSocketProtocol,
        # uvicorn's httptools protocol, writing a response's head and body in one write.
        "http": JoinedHeadHttpProtocol,
        "timeout_graceful_shutdown": graceful_shutdown_s,
        # X-Forwarded-For is resolved by the app, from TASKYARD_API_TRUSTED_PROXIES only.
        "proxy_headers": False,
        "log_config": None,
        "log_level": settings.log_level.lower(),
        # The app logs one line per request itself (with the request id, without query strings).
        "access_log": False,
        "server_header": False,
    }
    if processes == 1:
        tune_gc()
        uvicorn.run(create_app(settings), **options)
        return
    share_generated_keys(settings, os.environ)
    uvicorn.run(_FACTORY, factory=True, workers=processes, **options)

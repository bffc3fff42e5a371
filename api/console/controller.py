"""Serves the console's HTML and assets from this package: no CDN, no build step, works offline.

The page is static; everything a user sees comes from the REST API and /ws with their own token, so
serving it needs no auth. Every response carries a self-only Content-Security-Policy: no inline script,
no eval, no third-party origin, which is what keeps a stored task input from ever running as code.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from litestar import Response, get
from litestar.params import Parameter
from litestar.response import Redirect
from litestar.status_codes import HTTP_302_FOUND

from api.console.queues import queue_stats
from api.errors import NotFoundError

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler

__all__ = ("CONTENT_SECURITY_POLICY", "console_route_handlers")

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _asset_names() -> frozenset[str]:
    # A fixed allow-list read once: the name in the URL never reaches the filesystem as a path.
    return frozenset(p.name for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _MEDIA_TYPES)


@get("/", include_in_schema=False, status_code=HTTP_302_FOUND)
async def root_redirect() -> Redirect:
    """`/` has nothing of its own: send a browser to the console."""
    return Redirect("/console", status_code=HTTP_302_FOUND)


@get("/console", include_in_schema=False)
async def console_index() -> Response[bytes]:
    """The console's single HTML page (routing inside it uses the URL fragment)."""
    body = (STATIC_DIR / "index.html").read_bytes()
    return Response(body, media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)


@get("/console/static/{name:str}", include_in_schema=False)
async def console_asset(name: Annotated[str, Parameter(max_length=64)]) -> Response[bytes]:
    """One of the console's scripts or stylesheets."""
    if name not in _asset_names():
        raise NotFoundError("no such console asset")
    body = (STATIC_DIR / name).read_bytes()
    return Response(body, media_type=_MEDIA_TYPES[Path(name).suffix], headers=_SECURITY_HEADERS)


def console_route_handlers() -> list[HTTPRouteHandler]:
    return [root_redirect, console_index, console_asset, queue_stats]

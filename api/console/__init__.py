"""The web console: a static single-page app served by the API, talking to the same REST API and /ws."""

from api.console.controller import console_route_handlers

__all__ = ("console_route_handlers",)

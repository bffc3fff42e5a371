"""HTTP plumbing shared by every route: request ids, client IPs, the outer request middleware."""

from __future__ import annotations

from api.http.body import guard_json_body
from api.http.context import CallContext, call_context, client_ip, request_id
from api.http.middleware import RequestContextMiddleware

__all__ = ("CallContext", "RequestContextMiddleware", "call_context", "client_ip", "guard_json_body", "request_id")

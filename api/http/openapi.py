"""The OpenAPI description at `/schema`: the real error body per status, bearer auth, ids, tags, enums.

Litestar documents every operation with its own 400 shape (`status_code`, `detail`), which no route
ever sends. The generated document is corrected once, on first render, from facts about each route
(guards, body, parameters) plus the few statuses only a service knows about (`_EXTRA_STATUSES`),
so controllers stay free of repeated response annotations.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.routes import HTTPRoute

from protocol.errors import ErrorCode
from protocol.status import TaskStatus

if TYPE_CHECKING:
    from litestar import Litestar, Request
    from litestar.handlers import HTTPRouteHandler
    from litestar.types import Method

__all__ = ("ERROR_STATUSES", "openapi_config")

ERROR_SCHEMA_NAME = "ErrorBody"
_DOCUMENTED_MARK = "x-taskyard-documented"

ERROR_STATUSES: dict[int, str] = {
    400: "Malformed request: JSON that does not parse, is not UTF-8 or nests too deep, or a bad parameter.",
    401: "Missing, expired or revoked credentials.",
    403: "Authenticated but not allowed (e.g. an admin-only route).",
    404: "No such resource, or one you may not see (the same answer for both).",
    409: "The request clashes with the current state.",
    413: "The body, or one field of it, is over its size limit.",
    415: "A body that is not `application/json`.",
    422: "A well-formed body or parameter that is invalid; `details.field` names it.",
    429: "Rate limited; retry after the `Retry-After` header (seconds).",
    502: "The LLM provider failed the request; `details.jobId` names the job.",
    503: "A dependency (database, Redis) is unavailable; retry later.",
    504: "No answer within the wait bound; the job goes on, poll it by `details.jobId`.",
}

# Statuses that come from a service's rules rather than from the route's shape.
_EXTRA_STATUSES: dict[str, tuple[int, ...]] = {
    "authLogin": (401, 429),
    "authRefresh": (401,),
    "authRegister": (403, 409, 429),
    "tasksSubmit": (404, 409, 429),  # 404: a pinned `agentId` you may not use
    "tasksSubmitBatch": (404, 409, 429),
    "tasksCancel": (409,),
    "plannerCreateTaskFromText": (429, 502, 504),
    "plannerPostMessage": (429, 502, 504),
    "plannerDeleteLlmSettings": (404,),
    "operationsGetDeadLetter": (409,),
    "operationsDiscard": (409,),
    "operationsRetry": (409, 429),
    "operationsDisableUser": (409,),
}

# A second success status some operations answer with (an idempotent replay, a first creation).
_OTHER_SUCCESS: dict[str, tuple[int, str]] = {
    "tasksSubmit": (200, "An idempotency key seen before: the task it created."),
    "tasksSubmitBatch": (200, "Every idempotency key seen before: the tasks they created."),
    "operationsRetry": (200, "Retried before: the task that retry created."),
    "webhooksPutWebhook": (201, "The webhook was created (200 when it was updated)."),
}

_TAGS = [
    Tag(name="auth", description="Accounts, sessions and tokens."),
    Tag(name="agents", description="Agents (workers) and their tokens; admins manage them."),
    Tag(name="tasks", description="Submit, read, list and cancel tasks."),
    Tag(name="planner", description="Tasks with steps, planned by an LLM agent from text."),
    Tag(name="schedules", description="Cron and interval schedules that submit tasks."),
    Tag(name="webhooks", description="Your webhook, called when any of your tasks ends, and its deliveries."),
    Tag(name="operations", description="Dead letters, and admin holds: pauses, drains, disabled users."),
    Tag(name="admin", description="Admin views of the queues."),
]

_BEARER = "bearer"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def operation_id(handler: HTTPRouteHandler, method: Method, _components: list[Any]) -> str:
    """`<tag><HandlerName>`, e.g. `tasksSubmit`: stable across path changes and readable in generated clients."""
    tags = handler.resolve_tags()
    prefix = tags[0] if tags else "api"
    name = _camel(handler.handler_name)
    if len(handler.http_methods) > 1:
        name = method.lower() + name[:1].upper() + name[1:]
    return prefix + name[:1].upper() + name[1:]


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The one error body of every REST error.",
        "required": ["error", "message", "code"],
        "additionalProperties": False,
        "properties": {
            "error": {"type": "string", "enum": sorted({c.error for c in ErrorCode}), "description": "Stable name."},
            "message": {"type": "string", "description": "Human-readable; never contains secrets."},
            "code": {"type": "integer", "enum": sorted({c.code for c in ErrorCode}), "description": "Numeric code."},
            "details": {"type": "object", "additionalProperties": True, "description": 'e.g. `{"field": ...}`.'},
            "requestId": {"type": "string", "description": "The request's `X-Request-ID`."},
        },
    }


# `TaskEventView.data` is `Any` in code; on REST it has exactly these shapes (see docs/protocol.md).
_EVENT_DATA_SCHEMA: dict[str, Any] = {
    "description": "Per event type: `task/progress` the frame's `data` and `message`; `task/stream` its "
    "`offset` and `delta`; `task/status` the frame's `reason`, or null when there is none.",
    "anyOf": [
        {"type": "null"},
        {
            "title": "ProgressEventData",
            "type": "object",
            "properties": {"data": {"description": "Any JSON."}, "message": {"type": "string"}},
            "additionalProperties": False,
        },
        {
            "title": "StreamEventData",
            "type": "object",
            "required": ["offset", "delta"],
            "properties": {"offset": {"type": "integer", "minimum": 0}, "delta": {"type": "string"}},
            "additionalProperties": False,
        },
        {
            "title": "StatusEventData",
            "type": "object",
            "required": ["reason"],
            "properties": {"reason": {"type": "string"}},
            "additionalProperties": False,
        },
    ],
}


def _handlers(app: Litestar) -> dict[tuple[str, str], HTTPRouteHandler]:
    found: dict[tuple[str, str], HTTPRouteHandler] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                for method in handler.http_methods:
                    found[(route.path_format, method.lower())] = handler
    return found


_AUTHENTICATED = frozenset({"requires_user", "requires_admin", "requires_token"})
"""Guards that refuse a request without a valid bearer token (`requires_token` leaves part of the check
to the handler)."""


def _guards(handler: HTTPRouteHandler) -> set[str]:
    # By name: api.auth builds on api.http, so importing the guards here would make a cycle.
    return {getattr(guard, "__name__", "") for guard in handler.resolve_guards()}


def _statuses(handler: HTTPRouteHandler, op: dict[str, Any]) -> set[int]:
    guards = _guards(handler)
    params = op.get("parameters") or []
    statuses = {503}
    if "requestBody" in op:
        statuses |= {400, 413, 415, 422}
    if params:
        statuses |= {400, 422}
    if any(p.get("in") == "path" for p in params):
        statuses.add(404)
    if guards & _AUTHENTICATED:
        statuses.add(401)
    if "requires_admin" in guards:
        statuses.add(403)
    statuses.update(_EXTRA_STATUSES.get(op.get("operationId", ""), ()))
    return statuses


def _document_operation(handler: HTTPRouteHandler, op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    other = _OTHER_SUCCESS.get(op.get("operationId", ""))
    success = [r for s, r in responses.items() if s.startswith("2")]
    if other is not None and success and str(other[0]) not in responses:
        responses[str(other[0])] = {**success[0], "description": other[1]}
    for status in _statuses(handler, op):
        response: dict[str, Any] = {
            "description": ERROR_STATUSES[status],
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}},
        }
        if status == 429:
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}
        responses[str(status)] = response
    if _guards(handler) & _AUTHENTICATED:
        op["security"] = [{_BEARER: []}]
    doc = (handler.fn.__doc__ or "").strip()
    first = re.split(r"(?<=\.)\s", doc, maxsplit=1)[0] if doc else ""
    op["description"] = first or op.get("description") or op.get("summary", "")
    for param in op.get("parameters") or []:
        if param.get("name") == "status" and param.get("in") == "query":
            param["schema"] = {"type": "string", "enum": [s.value for s in TaskStatus]}


def document(app: Litestar, schema: dict[str, Any]) -> None:
    """Correct the generated document in place (once)."""
    if schema.get(_DOCUMENTED_MARK):
        return
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[ERROR_SCHEMA_NAME] = _error_schema()
    event = schemas.get("TaskEventView", {}).get("properties", {})
    if "data" in event:
        event["data"] = _EVENT_DATA_SCHEMA
    handlers = _handlers(app)
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            handler = handlers.get((path, method))
            if handler is not None and isinstance(op, dict):
                _document_operation(handler, op)
    schema[_DOCUMENTED_MARK] = True


class _DocumentedJson(JsonRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        document(request.app, openapi_schema)
        return super().render(request, openapi_schema)


class _DocumentedYaml(YamlRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        document(request.app, openapi_schema)
        return super().render(request, openapi_schema)


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="taskyard",
        version=version,
        description="Distributed task scheduler for LLM worker agents. Agents speak the WebSocket protocol at `/ws`.",
        path="/schema",
        render_plugins=[SwaggerRenderPlugin(), _DocumentedJson(), _DocumentedYaml()],
        components=Components(
            security_schemes={
                _BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description="A user's access token from `POST /api/auth/login`.",
                )
            }
        ),
        tags=_TAGS,
        operation_id_creator=operation_id,
        use_handler_docstrings=True,
    )

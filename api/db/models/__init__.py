"""Every table's model, imported so `Base.metadata` is complete (Alembic and tests rely on it)."""

from __future__ import annotations

from api.db.models.agents import Agent
from api.db.models.audit import AuditLog
from api.db.models.auth import RefreshToken, RevokedToken
from api.db.models.ops import DeadLetter
from api.db.models.planner import LlmSettingsRow, PlannerJob, PlannerMessage, PlannerSession, PlannerStep, PlannerTask
from api.db.models.schedules import Schedule, ScheduleRun
from api.db.models.tasks import Task, TaskEvent
from api.db.models.users import User
from api.db.models.webhooks import TaskCallback, Webhook, WebhookDelivery

__all__ = (
    "Agent",
    "AuditLog",
    "DeadLetter",
    "LlmSettingsRow",
    "PlannerJob",
    "PlannerMessage",
    "PlannerSession",
    "PlannerStep",
    "PlannerTask",
    "RefreshToken",
    "RevokedToken",
    "Schedule",
    "ScheduleRun",
    "Task",
    "TaskCallback",
    "TaskEvent",
    "User",
    "Webhook",
    "WebhookDelivery",
)

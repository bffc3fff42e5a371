"""What the operations side adds to the app: dead letters, holds, schedules, webhooks (registered by create_app)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.ops.admin_controllers import HoldsController
from api.ops.controllers import AdminDeadLetterController, DeadLetterController
from api.schedules.controllers import ScheduleController
from api.webhooks.controllers import WebhookController

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("route_handlers",)


def route_handlers() -> Sequence[Any]:
    return [DeadLetterController, AdminDeadLetterController, HoldsController, ScheduleController, WebhookController]

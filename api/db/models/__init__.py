"""Every table's model, imported so `Base.metadata` is complete (Alembic and tests rely on it)."""

from __future__ import annotations

import importlib
import importlib.util

from api.db.models.audit import AuditLog
from api.db.models.auth import RefreshToken, RevokedToken
from api.db.models.users import User

__all__ = ("AuditLog", "RefreshToken", "RevokedToken", "User")

# Tables owned by the agents/tasks engineers. Imported when their modules exist, so this package
# never breaks while they are being written; once both exist these become plain imports.
for _name in ("api.db.models.agents", "api.db.models.tasks"):
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)

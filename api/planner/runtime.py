"""`PlannerRuntime` (`app.state.planner`): what the planner's routes and its /ws hooks share for the app's life."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.planner.ssrf import Resolver, system_resolver

if TYPE_CHECKING:
    from api.planner.applier import JobApplier
    from api.planner.credentials import CredentialSealer
    from api.planner.crypto import KeyRing
    from api.planner.jobs import PlannerJobs
    from api.planner.live import SessionFeed
    from api.planner.ssrf import AllowList
    from api.settings import PlannerSettings

__all__ = ("PlannerRuntime",)


@dataclass(slots=True)
class PlannerRuntime:
    """`app.state.planner`: what the planner routes and the /ws hooks share for the app's life."""

    settings: PlannerSettings
    jobs: PlannerJobs
    sealer: CredentialSealer
    feed: SessionFeed | None
    applier: JobApplier
    keys: KeyRing | None
    allow: AllowList
    resolver: Resolver = system_resolver
    """Host -> addresses for the base-URL check (tests put a fake resolver here)."""

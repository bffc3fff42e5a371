"""Admin chores on the database, shared by the `taskyard` CLI and the dev supervisor: the first admin, agents.

Kept apart from both so that neither imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncSession

    from api.settings import ApiSettings

__all__ = ("create_agent", "ensure_admin")


async def _hash_password(settings: ApiSettings, password: str) -> str:
    """argon2id with the configured cost, through the same service the login path verifies with."""
    from api.auth.passwords import PasswordService

    service = PasswordService(
        time_cost=settings.auth.argon2_time_cost,
        memory_cost_kib=settings.auth.argon2_memory_cost_kib,
        parallelism=settings.auth.argon2_parallelism,
        concurrency=1,
    )
    return await service.hash(password)


async def ensure_admin(settings: ApiSettings, *, email: str, password: str | None, name: str | None) -> tuple[str, str]:
    """Create the admin, or promote (and reactivate) an existing user; a given password replaces the old one.

    Returns (user id, "created" | "promoted").
    """
    from sqlalchemy import select

    from api.db.base import utcnow
    from api.db.models.users import User
    from api.db.session import create_engine, create_sessionmaker

    email = email.strip().lower()
    engine = create_engine(settings.database)
    try:
        async with create_sessionmaker(engine)() as session:
            user = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
            now = utcnow()
            if user is None:
                if not password:
                    raise SystemExit("create-admin: a new admin needs a password (--password or --password-stdin)")
                user = User(
                    email=email,
                    name=name or email.partition("@")[0],
                    password_hash=await _hash_password(settings, password),
                    role="admin",
                    is_active=True,
                    token_version=0,
                    created_at=now,
                    updated_at=now,
                )
                session.add(user)
                outcome = "created"
            else:
                user.role = "admin"
                user.is_active = True
                if name:
                    user.name = name
                if password:
                    user.password_hash = await _hash_password(settings, password)
                    # A reset password ends every session issued under the old one.
                    user.token_version += 1
                user.updated_at = now
                outcome = "promoted"
            _audit(session, action="cli_create_admin", target_id=None, details={"outcome": outcome})
            await session.flush()
            user_id = user.id
            await session.commit()
            return user_id, outcome
    finally:
        await engine.dispose()


def _audit(session: AsyncSession, *, action: str, target_id: str | None, details: dict[str, Any]) -> None:
    """An audit row for a CLI action (actor: the operator at the console, so no actor id)."""
    from api.audit import record

    record(
        session,
        action=action,
        outcome="success",
        actor_id=None,
        actor_role="cli",
        target_type="cli",
        target_id=target_id,
        details=details,
    )


async def create_agent(
    settings: ApiSettings,
    *,
    name: str,
    owner_email: str | None,
    capabilities: Sequence[str],
    concurrency: int,
    is_public: bool,
    agent_type: str = "generic",
    trusted: bool = False,
) -> tuple[str, str]:
    """Create an agent through the agents service (owner: `owner_email`, else the first admin).

    Returns (agent id, the one-time token).
    """
    from sqlalchemy import select

    from api.agents.schemas import AgentCreate
    from api.agents.service import AgentService
    from api.auth.identity import CurrentUser
    from api.db.models.users import User
    from api.db.session import create_engine, create_sessionmaker

    engine = create_engine(settings.database)
    try:
        async with create_sessionmaker(engine)() as session:
            query = select(User).where(User.is_active.is_(True))
            if owner_email:
                query = query.where(User.email == owner_email.strip().lower())
            else:
                query = query.where(User.role == "admin").order_by(User.created_at)
            owner = (await session.execute(query.limit(1))).scalar_one_or_none()
            if owner is None:
                raise SystemExit("create-agent: no such active user; run `taskyard create-admin` first")
            actor = CurrentUser(
                id=owner.id, email=owner.email, name=owner.name, role=owner.role, jti="cli", token_exp=0
            )
            data = AgentCreate(
                name=name,
                type=agent_type,
                capabilities=list(capabilities),
                concurrency=concurrency,
                is_public=is_public,
                trusted=trusted,
            )
            # Creating an agent touches only the database; the scheduler learns of it when it connects.
            service = AgentService(session, scheduler=None)  # type: ignore[arg-type]
            agent, created = await service.create(actor, data)
            _audit(session, action="cli_create_agent", target_id=agent.id, details={"name": name})
            await session.commit()
            return agent.id, created.token
    finally:
        await engine.dispose()

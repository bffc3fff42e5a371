"""`task_events` writes that tolerate replays: `INSERT ... ON CONFLICT (task_id, seq) DO NOTHING`.

The one place the dialect matters: PostgreSQL and SQLite each have their own `insert()` construct.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects import postgresql, sqlite

from api.db.models.tasks import TaskEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ("insert_events_ignore_duplicates",)

# Rows per statement; keeps the bound-parameter count far below SQLite's limit (32766).
_CHUNK = 500


async def insert_events_ignore_duplicates(session: AsyncSession, rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """Insert event rows, skipping any (task_id, seq) already stored; returns the pairs inserted now."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    insert_fn = sqlite.insert if dialect == "sqlite" else postgresql.insert
    inserted: set[tuple[str, int]] = set()
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        stmt = (
            insert_fn(TaskEvent)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=["task_id", "seq"])
            .returning(TaskEvent.task_id, TaskEvent.seq)
        )
        result = await session.execute(stmt)
        inserted.update((str(r[0]), int(r[1])) for r in result.all())
    return inserted

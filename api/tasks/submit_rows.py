"""What a submission is checked for and the row it becomes: no database or Redis work here."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import text

from api.db.models.tasks import Task
from api.errors import ApiError, PayloadTooLargeError, ValidationFailedError
from api.tasks import history
from protocol.errors import ErrorCode
from protocol.limits import MAX_IDEMPOTENCY_KEY_LENGTH, MAX_TASK_INPUT_BYTES
from protocol.status import TaskStatus
from protocol.views import TaskView
from scheduler.types import TaskSpec

if TYPE_CHECKING:
    from api.auth.identity import CurrentUser
    from api.tasks.schemas import TaskCreate

__all__ = (
    "BATCH_INSERT",
    "BATCH_INSERT_SQL",
    "Prepared",
    "batch_rows_json",
    "new_fields",
    "new_row",
    "new_spec",
    "new_view",
    "prepare",
    "replay",
    "where",
)

_KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")


@dataclass(slots=True)
class Prepared:
    """A submission (or one batch item) that passed its checks."""

    index: int | None
    """Position in a batch (None for a single submission)."""
    data: TaskCreate
    key: str | None
    request_hash: str | None
    """Only with a key: nothing but a replay of that key ever reads it."""
    input_json: bytes


def _request_hash(data: TaskCreate) -> str:
    """Fingerprint of what was asked, so a replayed key can be told apart from a reused one.

    Key order inside `input` and the offset of `runAt` do not change it; defaults and explicit
    defaults hash alike.
    """
    canonical = msgspec.structs.replace(
        data,
        idempotency_key=None,
        capabilities=sorted(set(data.capabilities)),
        run_at=data.run_at.astimezone(dt.UTC) if data.run_at else None,
    )
    return hashlib.sha256(msgspec.json.encode(msgspec.to_builtins(canonical), order="sorted")).hexdigest()


def where(index: int | None, field: str) -> dict[str, Any]:
    """An error's `details`: the field, and the batch item's position when there is one."""
    return {"field": field} if index is None else {"field": field, "index": index}


def prepare(data: TaskCreate, header_key: str | None, index: int | None) -> Prepared:
    """The checks a submission must pass before anything is written, and what the rest of it needs."""
    if header_key is not None and not _KEY_PATTERN.fullmatch(header_key):
        raise ValidationFailedError(
            f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters",
            {"field": "Idempotency-Key"},
        )
    key = data.idempotency_key
    if header_key is not None and key is not None and header_key != key:
        raise ValidationFailedError(
            "Idempotency-Key header and idempotencyKey field differ", where(index, "idempotencyKey")
        )
    key = key or header_key
    if data.agent_id is not None and data.capabilities:
        raise ValidationFailedError("give agentId or capabilities, not both", where(index, "capabilities"))
    if data.run_at is not None and data.run_at.tzinfo is None:
        raise ValidationFailedError("runAt needs a UTC offset (RFC 3339)", where(index, "runAt"))
    input_json = msgspec.json.encode(data.input)
    if len(input_json) > MAX_TASK_INPUT_BYTES:
        raise PayloadTooLargeError(f"input is over {MAX_TASK_INPUT_BYTES} bytes", where(index, "input"))
    return Prepared(index, data, key, _request_hash(data) if key is not None else None, input_json)


def replay(prepared: Prepared, existing: Task) -> Task:
    """The row an idempotency key already made, if this submission asks the same; else `idempotency_key_reused`."""
    if existing.request_hash != prepared.request_hash:
        raise ApiError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was used with a different request",
            where(prepared.index, "idempotencyKey"),
        )
    return existing


def new_fields(user: CurrentUser, p: Prepared, now: dt.datetime) -> dict[str, Any]:
    """The columns of the `tasks` row a prepared submission becomes (api/tasks/submit_group.py's `NEW_ROW_KEYS`).

    A plain dict: a batch inserts, views and enqueues these without an ORM object per task (building one was a
    tenth of the API's time in a batch submit).
    """
    data = p.data
    run_at = data.run_at.astimezone(dt.UTC) if data.run_at else None
    status = str(TaskStatus.SCHEDULED if run_at is not None and run_at > now else TaskStatus.QUEUED)
    # The first status change is written with the row, so the history is whole even if Redis
    # never hears of the task; the enqueue (seq 0) makes the scheduler emit the same event as
    # seq 1, which the recorder then merges onto this entry.
    return {
        "id": str(uuid.uuid4()),
        "owner_id": user.id,
        "type": data.type,
        "input": data.input,
        "priority": data.priority,
        "agent_id": data.agent_id,
        "capabilities": sorted(set(data.capabilities)),
        "timeout_s": data.timeout_seconds,
        "max_attempts": data.max_attempts,
        "run_at": run_at,
        "idempotency_key": p.key,
        "request_hash": p.request_hash,
        "status": status,
        "attempt": 0,
        "seq": 1,
        "created_at": now,
        "updated_at": now,
        "history": [history.entry(1, status, attempt=0, agent_id=None, data=None, at=now)],
    }


def new_row(user: CurrentUser, p: Prepared, now: dt.datetime) -> Task:
    """The `tasks` row a prepared submission becomes (not yet added to any session)."""
    return Task(**new_fields(user, p, now))


def new_view(row: dict[str, Any]) -> TaskView:
    """`task_view` of a row `new_fields` built and nothing has changed since (no outcome, no agent yet)."""
    return TaskView(
        id=row["id"],
        type=row["type"],
        status=TaskStatus(row["status"]),
        priority=row["priority"],
        input=row["input"],
        attempt=0,
        max_attempts=row["max_attempts"],
        capabilities=row["capabilities"],
        timeout_seconds=row["timeout_s"],
        owner_id=row["owner_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        pinned_agent_id=row["agent_id"],
        run_at=row["run_at"],
        idempotency_key=row["idempotency_key"],
    )


def new_spec(row: dict[str, Any], input_json: bytes) -> TaskSpec:
    """`spec_for(..., fresh=True)` of a row `new_fields` built; `input_json` is the input `prepare` encoded."""
    run_at: dt.datetime | None = row["run_at"]
    return TaskSpec(
        task_id=row["id"],
        owner_id=row["owner_id"],
        type=row["type"],
        input_json=input_json,
        priority=row["priority"],
        agent_id=row["agent_id"],
        capabilities=tuple(row["capabilities"]),
        timeout_s=row["timeout_s"],
        max_attempts=row["max_attempts"],
        run_at_ms=None if run_at is None else int(run_at.timestamp() * 1000),
        status=row["status"],
    )


BATCH_INSERT_SQL = (
    "INSERT INTO tasks (id, owner_id, type, input, priority, agent_id, capabilities, timeout_s, max_attempts, "
    "run_at, idempotency_key, request_hash, status, attempt, seq, created_at, updated_at, history) "
    "SELECT id, owner_id, type, COALESCE(input, 'null'::jsonb), priority, agent_id, capabilities, timeout_s, "
    "max_attempts, run_at, idempotency_key, request_hash, status, attempt, seq, created_at, updated_at, history "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id varchar, owner_id varchar, type varchar, input jsonb, "
    "priority int, agent_id varchar, capabilities jsonb, timeout_s int, max_attempts int, run_at timestamptz, "
    "idempotency_key varchar, request_hash varchar, status varchar, attempt int, seq int, created_at timestamptz, "
    "updated_at timestamptz, history jsonb)"
)
BATCH_INSERT = text(BATCH_INSERT_SQL)
"""A batch's rows as one INSERT of one JSON parameter (PostgreSQL): one encode in C for the whole batch instead
of psycopg dumping some twenty parameters per row and sending an execution per row. (A JSON `null` input is a
missing value to `jsonb_to_recordset`, hence the COALESCE back to JSON `null`, as the ORM stores it.)"""


def batch_rows_json(rows: list[dict[str, Any]], input_jsons: list[bytes]) -> str:
    """`BATCH_INSERT`'s parameter: the rows as a JSON array, each input spliced in as `prepare` encoded it."""
    return msgspec.json.encode(
        [{**row, "input": msgspec.Raw(raw)} for row, raw in zip(rows, input_jsons, strict=True)]
    ).decode()

"""What a submission is checked for and the row it becomes: no database or Redis work here."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from api.db.models.tasks import Task
from api.errors import ApiError, PayloadTooLargeError, ValidationFailedError
from api.tasks import history
from protocol.errors import ErrorCode
from protocol.limits import MAX_IDEMPOTENCY_KEY_LENGTH, MAX_TASK_INPUT_BYTES
from protocol.status import TaskStatus

if TYPE_CHECKING:
    from api.auth.identity import CurrentUser
    from api.tasks.schemas import TaskCreate

__all__ = ("Prepared", "new_row", "prepare", "replay", "where")

_KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")


@dataclass(slots=True)
class Prepared:
    """A submission (or one batch item) that passed its checks."""

    index: int | None
    """Position in a batch (None for a single submission)."""
    data: TaskCreate
    key: str | None
    request_hash: str
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
    return Prepared(index, data, key, _request_hash(data), input_json)


def replay(prepared: Prepared, existing: Task) -> Task:
    """The row an idempotency key already made, if this submission asks the same; else `idempotency_key_reused`."""
    if existing.request_hash != prepared.request_hash:
        raise ApiError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was used with a different request",
            where(prepared.index, "idempotencyKey"),
        )
    return existing


def new_row(user: CurrentUser, p: Prepared, now: dt.datetime) -> Task:
    """The `tasks` row a prepared submission becomes (not yet added to any session)."""
    data = p.data
    run_at = data.run_at.astimezone(dt.UTC) if data.run_at else None
    status = str(TaskStatus.SCHEDULED if run_at is not None and run_at > now else TaskStatus.QUEUED)
    # The first status change is written with the row, so the history is whole even if Redis
    # never hears of the task; the enqueue (seq 0) makes the scheduler emit the same event as
    # seq 1, which the recorder then merges onto this entry.
    return Task(
        id=str(uuid.uuid4()),
        owner_id=user.id,
        type=data.type,
        input=data.input,
        priority=data.priority,
        agent_id=data.agent_id,
        capabilities=sorted(set(data.capabilities)),
        timeout_s=data.timeout_seconds,
        max_attempts=data.max_attempts,
        run_at=run_at,
        idempotency_key=p.key,
        request_hash=p.request_hash,
        status=status,
        attempt=0,
        seq=1,
        created_at=now,
        updated_at=now,
        history=[history.entry(1, status, attempt=0, agent_id=None, data=None, at=now)],
    )

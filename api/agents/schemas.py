"""Request and response bodies of `/api/agents` (camelCase on the wire, unknown fields refused).

The token appears in exactly one body: `AgentCreated`, the answer to create and rotate.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from protocol.limits import MAX_NAME_LENGTH, Capabilities, TaskType
from protocol.views import AgentView

__all__ = (
    "MAX_AGENT_CONCURRENCY",
    "MAX_AGENT_META_BYTES",
    "MAX_TOKEN_LENGTH",
    "MIN_TOKEN_LENGTH",
    "AgentCreate",
    "AgentCreated",
    "AgentList",
    "AgentUpdate",
    "RotateToken",
)

MIN_TOKEN_LENGTH = 32
"""A caller-chosen token must be at least this long (`secrets.token_urlsafe(32)` gives 43)."""
MAX_TOKEN_LENGTH = 256
MAX_AGENT_CONCURRENCY = 10000
"""Most tasks one agent connection may run at once."""
MAX_AGENT_META_BYTES = 16384
"""Largest encoded `meta` object."""
MAX_TAGS = 32

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=MAX_TAGS)]
Concurrency = Annotated[int, msgspec.Meta(ge=1, le=MAX_AGENT_CONCURRENCY)]
Token = Annotated[
    str, msgspec.Meta(min_length=MIN_TOKEN_LENGTH, max_length=MAX_TOKEN_LENGTH, pattern=r"^[\x21-\x7e]+$")
]


class AgentCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name
    type: TaskType = "generic"
    """What kind of agent this is (free text for people; dispatch uses capabilities)."""
    capabilities: Capabilities = msgspec.field(default_factory=list)
    concurrency: Concurrency = 1
    tags: Tags = msgspec.field(default_factory=list)
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    is_public: bool = False
    """Public agents may be used and seen by every user; private ones by admins only."""
    trusted: bool = False
    """Our own LLM workers: they get the task owner's LLM settings, sealed, with LLM tasks (docs/planner.md)."""
    token: Token | None = None
    """Optional caller-chosen token (at least 32 printable characters); generated when absent."""


class AgentUpdate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """A partial update: absent fields keep their value. The token changes only through rotate-token."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    type: TaskType | msgspec.UnsetType = msgspec.UNSET
    capabilities: Capabilities | msgspec.UnsetType = msgspec.UNSET
    concurrency: Concurrency | msgspec.UnsetType = msgspec.UNSET
    tags: Tags | msgspec.UnsetType = msgspec.UNSET
    meta: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    is_public: bool | msgspec.UnsetType = msgspec.UNSET
    trusted: bool | msgspec.UnsetType = msgspec.UNSET


class RotateToken(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    token: Token | None = None
    """Optional caller-chosen new token; generated when absent."""


class AgentCreated(AgentView, kw_only=True):
    """The answer to create and rotate-token: the agent plus its token, shown this once."""

    token: str
    """Only its sha256 is stored."""


class AgentList(msgspec.Struct, rename="camel", kw_only=True):
    items: list[AgentView]
    total: int

"""The control channel between API replicas: "close these sockets" messages.

Whoever revokes something (agent delete/rotate, logout, user disable) calls `publish_control`;
every replica's fan-out listener hands the message to `apply_control`, which closes the matching
local sockets with 1008. At most once, like all pub/sub: a replica that misses one still refuses
the credential at the next handshake.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import msgspec

from api.ws.framing import CloseCode
from scheduler.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio

    from api.ws.registry import SessionRegistry

__all__ = ("ControlKind", "ControlMessage", "apply_control", "publish_control")

logger = logging.getLogger(__name__)

ControlKind = Literal["agent_revoked", "agent_updated", "token_revoked", "user_disabled"]
"""`agent_revoked` / `agent_updated`: id is an agent id; `token_revoked`: an access-token jti;
`user_disabled`: a user id. `agent_updated` closes nothing: the agent's sessions reload its settings."""


class ControlMessage(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The JSON published on `{prefix}:control`."""

    kind: ControlKind
    id: str


_DECODER = msgspec.json.Decoder(ControlMessage)
_REASONS: dict[str, str] = {
    "agent_revoked": "agent token revoked",
    "token_revoked": "session revoked",
    "user_disabled": "user disabled",
}


async def publish_control(redis: redis.asyncio.Redis, prefix: str, kind: ControlKind, id: str) -> int:
    """Tell every API replica (this one included) to close the sockets `kind`/`id` names.

    Returns the number of replicas that received it (PUBLISH's reply).
    """
    data = msgspec.json.encode(ControlMessage(kind=kind, id=id))
    return int(await redis.publish(Keys(prefix).control_channel(), data))


def apply_control(registry: SessionRegistry, data: bytes) -> int:
    """Close (or refresh) the local sessions a control message names; returns how many were asked."""
    try:
        message = _DECODER.decode(data)
    except msgspec.DecodeError:
        logger.warning("ignoring a malformed control message (%d bytes)", len(data))
        return 0
    if message.kind == "agent_updated":
        return registry.refresh_agent(message.id)
    reason = _REASONS[message.kind]
    code = CloseCode.POLICY_VIOLATION
    if message.kind == "agent_revoked":
        closed = registry.close_agent(message.id, code, reason)
    elif message.kind == "token_revoked":
        closed = registry.close_token(message.id, code, reason)
    else:
        closed = registry.close_user(message.id, code, reason)
    if closed:
        logger.info("control %s closed %d socket(s)", message.kind, closed)
    return closed

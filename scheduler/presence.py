"""Reading which agents are online and how loaded (the scripts own every write)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from scheduler.scripts import as_str
from scheduler.types import AgentPresence

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from scheduler.keys import Keys

__all__ = ("read_online",)


async def read_online(redis: Redis, keys: Keys, now_ms: int) -> list[AgentPresence]:
    """Agents whose lease runs past `now_ms`, with their slot use (one snapshot, may be stale)."""
    members: list[Any] = await redis.zrangebyscore(keys.agents(), f"({now_ms}", "+inf", withscores=True)
    if not members:
        return []
    pipe = redis.pipeline(transaction=False)
    for member, _score in members:
        pipe.hmget(keys.agent(as_str(member)), ["running", "conc", "caps", "accepting"])
    rows = await pipe.execute()
    out: list[AgentPresence] = []
    for (member, score), row in zip(members, rows, strict=True):
        running, conc, caps, accepting = row
        if conc is None:  # lease without a hash: being reaped
            continue
        out.append(
            AgentPresence(
                agent_id=as_str(member),
                running=int(running or 0),
                concurrency=int(conc),
                lease_until_ms=int(score),
                capabilities=tuple(json.loads(caps or b"[]")),
                accepting=as_str(accepting) == "1",
            )
        )
    return out

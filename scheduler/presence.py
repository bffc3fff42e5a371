"""Reading which agents are online and how loaded (the scripts own every write)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from scheduler.scripts import as_str
from scheduler.types import AgentPresence

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from scheduler.keys import Keys

__all__ = ("clear_watching", "mark_watching", "read_online")

# The whole index goes once no instance refreshes it; a refresh never shortens the TTL another instance set.
# (PEXPIRE's NX/GT options would say it in one command each, but need Redis 7; the embedded server is 6.2.)
_MARK_WATCHING = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
"""


async def mark_watching(redis: Redis, keys: Keys, instance: str, now_ms: int, ttl_ms: int) -> None:
    """Say that `instance` (an API process) has watchers for `ttl_ms` from `now_ms`: scripts publish events
    to the owners' watch channels only while some instance says so. Refresh well before it runs out."""
    await redis.eval(_MARK_WATCHING, 1, keys.watching(), instance, now_ms + ttl_ms, ttl_ms)


async def clear_watching(redis: Redis, keys: Keys, instance: str) -> None:
    """`instance` has no client socket any more (its entry would otherwise run out by itself)."""
    await redis.zrem(keys.watching(), instance)


async def read_online(redis: Redis, keys: Keys, now_ms: int) -> list[AgentPresence]:
    """Agents whose lease runs past `now_ms`, with their slot use (one snapshot, may be stale)."""
    members: list[Any] = await redis.zrangebyscore(keys.agents(), f"({now_ms}", "+inf", withscores=True)
    if not members:
        return []
    pipe = redis.pipeline(transaction=False)
    for member, _score in members:
        agent_id = as_str(member)
        pipe.hmget(keys.agent(agent_id), ["conc", "caps", "accepting"])
        pipe.scard(keys.agent_tasks(agent_id))  # slots in use: the size of the slot set
    replies = await pipe.execute()
    out: list[AgentPresence] = []
    for i, (member, score) in enumerate(members):
        (conc, caps, accepting), running = replies[2 * i], replies[2 * i + 1]
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

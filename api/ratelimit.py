"""Redis-backed rate limits shared by every API replica: one atomic Lua script per check.

Fixed windows keyed by (bucket, subject); subjects are hashed, so emails and IPs never appear in
key names. When Redis is down, `hit` raises `ServiceUnavailableError` (fail closed: never unlimited).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from api.errors import ServiceUnavailableError

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ("RateDecision", "RateGuard", "RateLimiter", "ratelimit_key")


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    """False when the limit is reached in the current window."""
    retry_after_s: int
    """Seconds until the window ends when refused (0 when allowed)."""
    count: int = 0
    """Hits counted in the current window."""


@dataclass(frozen=True, slots=True)
class RateGuard:
    """Keys that refuse a hit before it is counted: `version_key` holding a number above `version`, or
    any of `absent_keys` existing."""

    version_key: str
    version: int
    absent_keys: tuple[str, ...] = ()


def ratelimit_key(prefix: str, bucket: str, subject: str) -> str:
    """`{prefix}:ratelimit:{bucket}:{sha256(subject)[:32]}`: the one place these keys are built."""
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{prefix}:ratelimit:{bucket}:{digest}"


def _load_script() -> str:
    return importlib.resources.files("api").joinpath("lua/ratelimit.lua").read_text(encoding="utf-8")


class RateLimiter:
    """`hit()` counts and decides; `peek()` decides without counting (e.g. check failures before a login)."""

    def __init__(self, redis: redis.asyncio.Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_load_script())

    async def _run(
        self, bucket: str, key: str, incr: int, window_s: float, *, refuse_above: int, guard: RateGuard | None = None
    ) -> tuple[int, int]:
        """(count, ms left in the window); the script reads the time left only for a count above
        `refuse_above`, the one case a decision needs it (0 otherwise)."""
        keys = [ratelimit_key(self._prefix, bucket, key)]
        args: list[int] = [incr, max(1, int(window_s * 1000)), refuse_above]
        if guard is not None:
            keys.append(guard.version_key)
            keys.extend(guard.absent_keys)
            args.append(guard.version)
        try:
            reply = await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise ServiceUnavailableError("rate limiter unavailable, retry later") from exc
        return int(reply[0]), int(reply[1])

    async def hit(self, bucket: str, key: str, *, limit: int, window_s: float) -> RateDecision:
        """Count one hit; allowed while the count stays within `limit` in the window."""
        count, ttl_ms = await self._run(bucket, key, 1, window_s, refuse_above=limit)
        allowed = count <= limit
        return RateDecision(allowed, 0 if allowed else max(1, math.ceil(ttl_ms / 1000)), count)

    async def hit_guarded(
        self, bucket: str, key: str, guard: RateGuard, *, limit: int, window_s: float
    ) -> RateDecision | None:
        """`hit`, unless `guard` refuses it first (then None and nothing is counted), in one round trip.

        What an authenticated request uses to check its token's revocation keys and count its rate
        together; raises `ServiceUnavailableError` when Redis is down, like `hit`.
        """
        count, ttl_ms = await self._run(bucket, key, 1, window_s, refuse_above=limit, guard=guard)
        if count < 0:
            return None
        allowed = count <= limit
        return RateDecision(allowed, 0 if allowed else max(1, math.ceil(ttl_ms / 1000)), count)

    async def peek(self, bucket: str, key: str, *, limit: int, window_s: float) -> RateDecision:
        """Whether one more hit would be allowed, without counting it."""
        count, ttl_ms = await self._run(bucket, key, 0, window_s, refuse_above=limit - 1)
        allowed = count < limit
        return RateDecision(allowed, 0 if allowed else max(1, math.ceil(ttl_ms / 1000)), count)

    async def reset(self, bucket: str, key: str) -> None:
        """Forget a subject's count (e.g. failures after a successful login). Best effort."""
        with contextlib.suppress(RedisError):
            await self._redis.delete(ratelimit_key(self._prefix, bucket, key))

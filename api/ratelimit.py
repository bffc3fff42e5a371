"""Redis-backed rate limits shared by every API replica: one atomic Lua script per check.

Fixed windows keyed by (bucket, subject); subjects are hashed, so emails and IPs never appear in
key names. When Redis is down, `hit` raises `ServiceUnavailableError` (fail closed: never unlimited).

Leases (`hit_guarded(lease=True)`, `take_local`): a replica may count several hits of a subject in one
script call and admit them from memory until the window ends. Every admitted hit is counted in Redis
before it is admitted, so no replica ever admits past the limit; what a lease costs is the reverse: hits
a replica reserved and did not use are lost to the others, at most `lease_max(limit)` per other replica
per window. A lease starts at one hit and doubles with each renewal in the window, so a subject sending
rarely reserves nothing it does not use.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from api.errors import ServiceUnavailableError

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ("LEASE_MAX", "RateDecision", "RateGuard", "RateLimiter", "lease_max", "ratelimit_key")

LEASE_MAX = 64
"""The most hits one lease reserves."""
_LEASED_SUBJECTS = 10_000
"""Leases kept per process; past it they are all dropped (each costs one more script call to renew)."""


def lease_max(limit: int) -> int:
    """The largest lease for `limit` hits per window: a twentieth of it, 1..`LEASE_MAX`, so the hits other
    replicas can hold unused stay a small part of the limit."""
    return max(1, min(LEASE_MAX, limit // 20))


@dataclass(slots=True)
class _Lease:
    """Hits of one (bucket, subject) counted in Redis and not yet admitted, valid until `ends` (monotonic)."""

    left: int
    ends: float
    next_size: int
    """The size of the next lease in this window."""
    refused: bool = False
    """Redis refused the last lease: the limit is reached until `ends`."""


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
        self._leases: dict[tuple[str, str], _Lease] = {}

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
        self, bucket: str, key: str, guard: RateGuard, *, limit: int, window_s: float, lease: bool = False
    ) -> RateDecision | None:
        """`hit`, unless `guard` refuses it first (then None and nothing is counted), in one round trip.

        What an authenticated request uses to check its token's revocation keys and count its rate
        together; raises `ServiceUnavailableError` when Redis is down, like `hit`. With `lease`, the
        call also counts the hits of a lease (module docstring) that `take_local` then admits.
        """
        if not lease:
            count, ttl_ms = await self._run(bucket, key, 1, window_s, refuse_above=limit, guard=guard)
            if count < 0:
                return None
            allowed = count <= limit
            return RateDecision(allowed, 0 if allowed else max(1, math.ceil(ttl_ms / 1000)), count)
        held = self._leases.get((bucket, key))
        if held is not None and held.left > 0 and held.ends > time.monotonic():
            # Only the guard is due: read the count, take no hits (this one comes from the lease).
            count, _ = await self._run(bucket, key, 0, window_s, refuse_above=limit, guard=guard)
            if count < 0:
                return None
            local = self.take_local(bucket, key)
            if local is not None and local.allowed:
                return local
            held = self._leases.get((bucket, key))  # a concurrent request took the lease's last hit
        if held is not None and held.ends <= time.monotonic():
            held = None
        size = 1 if held is None else held.next_size
        started = time.monotonic()  # the window's end is measured from before the call: never later than Redis'
        # refuse_above -1: the script returns the window's time left, which bounds the lease.
        count, ttl_ms = await self._run(bucket, key, size, window_s, refuse_above=-1, guard=guard)
        if count < 0:
            return None
        granted = max(0, min(size, limit - (count - size)))
        ends = started + ttl_ms / 1000
        # Concurrent renewals of one subject each take a lease: the hits left in a live one (the same
        # window: an older window's lease ended before this one began) are kept, never dropped.
        current = self._leases.get((bucket, key))
        carried = current if current is not None and current.ends > time.monotonic() else None
        if carried is not None:
            carried.left += granted
            carried.ends = min(carried.ends, ends)
            carried.next_size = max(carried.next_size, min(size * 2, lease_max(limit)))
            carried.refused = carried.left == 0
        else:
            if len(self._leases) >= _LEASED_SUBJECTS:
                self._leases.clear()
            carried = self._leases[(bucket, key)] = _Lease(
                left=granted, ends=ends, next_size=min(size * 2, lease_max(limit)), refused=not granted
            )
        if carried.left == 0:
            return RateDecision(False, max(1, math.ceil(ttl_ms / 1000)), count)
        carried.left -= 1
        return RateDecision(True, 0, count - size + 1)

    def take_local(self, bucket: str, key: str) -> RateDecision | None:
        """A decision from this process' lease without Redis: allowed while it has hits left, refused
        (until the window ends) once Redis refused it; None when there is no live lease or it is used up."""
        held = self._leases.get((bucket, key))
        if held is None:
            return None
        left = held.ends - time.monotonic()
        if left <= 0:
            del self._leases[(bucket, key)]
            return None
        if held.left > 0:
            held.left -= 1
            return RateDecision(True, 0)
        if held.refused:
            return RateDecision(False, max(1, math.ceil(left)))
        return None

    async def peek(self, bucket: str, key: str, *, limit: int, window_s: float) -> RateDecision:
        """Whether one more hit would be allowed, without counting it."""
        count, ttl_ms = await self._run(bucket, key, 0, window_s, refuse_above=limit - 1)
        allowed = count < limit
        return RateDecision(allowed, 0 if allowed else max(1, math.ceil(ttl_ms / 1000)), count)

    async def reset(self, bucket: str, key: str) -> None:
        """Forget a subject's count (e.g. failures after a successful login). Best effort."""
        self._leases.pop((bucket, key), None)
        with contextlib.suppress(RedisError):
            await self._redis.delete(ratelimit_key(self._prefix, bucket, key))

"""Per-process cache of access tokens that passed the full database check.

Why: the database check (user row, `revoked_tokens`, the session's refresh family) was a round trip
on every authenticated request. Revocation stays immediate through Redis (logout and refresh-token
reuse set a key per token and per session, checked on every request in one command); what the cache
can serve stale is only what the database alone knows, for at most `ttl_s` seconds: a role change,
a deactivation, a token-version bump, or a revocation whose Redis key was lost (Redis emptied).

Concurrent misses of one token share one database check (`load_once`): when a busy token's entry
expired, every request in flight used to run its own (with 32 clients on one token, a stampede every
`ttl_s` costing a few percent of the API's time).

It also remembers when each token last passed the Redis revocation check (`checked`, `mark_checked`):
the keyless single submit skips that round trip for `auth.revocation_check_interval_s` after one
(api/auth/tokens.py `authenticate_counting`), which bounds how late a revocation takes effect there.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from api.auth.identity import CurrentUser

__all__ = ("UserCache",)


class UserCache:
    """`jti -> CurrentUser`, each entry kept `ttl_s` seconds (never past the token's own expiry)."""

    def __init__(self, ttl_s: float, *, max_entries: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, CurrentUser]] = OrderedDict()
        self._checked: dict[str, float] = {}
        """jti -> monotonic time until which its last Redis revocation check stands."""
        self._loading: dict[str, asyncio.Task[CurrentUser]] = {}
        """jti -> its database check in flight (`load_once`)."""
        self._generation = 0
        """Bumped by every `forget*` and `clear`: a check in flight across one does not fill the cache."""

    def get(self, jti: str) -> CurrentUser | None:
        hit = self._entries.get(jti)
        if hit is None:
            return None
        if hit[0] <= time.monotonic() or hit[1].token_exp <= time.time():
            del self._entries[jti]
            return None
        return hit[1]

    def put(self, user: CurrentUser) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[user.jti] = (time.monotonic() + self.ttl_s, user)
        self._entries.move_to_end(user.jti)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)  # the oldest entry: it is refreshed from the database

    async def load_once(self, jti: str, load: Callable[[], Awaitable[CurrentUser]]) -> CurrentUser:
        """`load()` (the database check), shared by every request that misses `jti` while it runs, then cached.

        With `ttl_s` 0 (no cache) each request runs its own: none is answered from a check it did not start.
        """
        if self.ttl_s <= 0:
            return await load()
        pending = self._loading.get(jti)
        if pending is None:
            pending = asyncio.get_running_loop().create_task(self._load(jti, load, self._generation))
            pending.add_done_callback(_retrieve)
            self._loading[jti] = pending
        return await asyncio.shield(pending)  # a waiter cancelled leaves the check to the others

    async def _load(self, jti: str, load: Callable[[], Awaitable[CurrentUser]], generation: int) -> CurrentUser:
        try:
            user = await load()
        finally:
            if self._loading.get(jti) is asyncio.current_task():
                del self._loading[jti]
        if generation == self._generation:
            self.put(user)
        return user

    def checked(self, jti: str) -> bool:
        """Whether the token passed the Redis revocation check recently enough to skip it now."""
        until = self._checked.get(jti)
        return until is not None and until > time.monotonic()

    def mark_checked(self, jti: str, for_s: float) -> None:
        """The token passed the Redis revocation check; it stands for `for_s` seconds (0: not at all)."""
        if for_s <= 0:
            return
        if len(self._checked) >= self._max_entries:
            self._checked.clear()  # rare: each live token costs one more check
        self._checked[jti] = time.monotonic() + for_s

    def clear_checks(self) -> None:
        """Every token is checked in Redis on its next submit (a session was revoked here: its tokens are unknown)."""
        self._checked.clear()

    def forget(self, jti: str) -> None:
        self._forget_loads()
        self._entries.pop(jti, None)
        self._checked.pop(jti, None)

    def forget_user(self, user_id: str) -> None:
        self._forget_loads()
        for jti in [j for j, (_, u) in self._entries.items() if u.id == user_id]:
            del self._entries[jti]
            self._checked.pop(jti, None)

    def clear(self) -> None:
        self._forget_loads()
        self._entries.clear()
        self._checked.clear()

    def _forget_loads(self) -> None:
        """Checks in flight may have read what changed: later misses start their own, and none is cached."""
        self._generation += 1
        self._loading.clear()


def _retrieve(load: asyncio.Task[CurrentUser]) -> None:
    """Mark a failed check's error as seen when every waiter was cancelled (no "never retrieved" log)."""
    if not load.cancelled():
        load.exception()

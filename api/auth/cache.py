"""Per-process cache of access tokens that passed the full database check.

Why: the database check (user row, `revoked_tokens`, the session's refresh family) was a round trip
on every authenticated request. Revocation stays immediate through Redis (logout and refresh-token
reuse set a key per token and per session, checked on every request in one command); what the cache
can serve stale is only what the database alone knows, for at most `ttl_s` seconds: a role change,
a deactivation, a token-version bump, or a revocation whose Redis key was lost (Redis emptied).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.auth.identity import CurrentUser

__all__ = ("UserCache",)


class UserCache:
    """`jti -> CurrentUser`, each entry kept `ttl_s` seconds (never past the token's own expiry)."""

    def __init__(self, ttl_s: float, *, max_entries: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, CurrentUser]] = OrderedDict()

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

    def forget(self, jti: str) -> None:
        self._entries.pop(jti, None)

    def forget_user(self, user_id: str) -> None:
        for jti in [j for j, (_, u) in self._entries.items() if u.id == user_id]:
            del self._entries[jti]

    def clear(self) -> None:
        self._entries.clear()

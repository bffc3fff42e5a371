"""The per-process cache of checked access tokens: concurrent misses of one token share one database check."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.auth.cache import UserCache
from api.auth.identity import CurrentUser
from api.errors import UnauthorizedError


def _user(jti: str = "j1", role: str = "user") -> CurrentUser:
    return CurrentUser(id="u1", email="a@example.com", name="A", role=role, jti=jti, token_exp=int(time.time()) + 600)


class _Database:
    """A database check the test releases by hand, counting how many ran."""

    def __init__(self, result: CurrentUser | Exception) -> None:
        self.result = result
        self.calls = 0
        self.release = asyncio.Event()

    async def load(self) -> CurrentUser:
        self.calls += 1
        await self.release.wait()
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def test_concurrent_misses_share_one_check_and_cache_it() -> None:
    cache, db = UserCache(2.0), _Database(_user())
    waiters = [asyncio.create_task(cache.load_once("j1", db.load)) for _ in range(32)]
    await asyncio.sleep(0)
    db.release.set()
    users = await asyncio.gather(*waiters)
    assert db.calls == 1
    assert {u.id for u in users} == {"u1"}
    assert cache.get("j1") == _user()
    assert await cache.load_once("j1", db.load) == _user()  # a new miss after it ended runs its own
    assert db.calls == 2


async def test_a_refused_token_is_refused_to_every_waiter_and_not_cached() -> None:
    cache, db = UserCache(2.0), _Database(UnauthorizedError("token revoked"))
    waiters = [asyncio.create_task(cache.load_once("j1", db.load)) for _ in range(3)]
    await asyncio.sleep(0)
    db.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert db.calls == 1
    assert all(isinstance(r, UnauthorizedError) for r in results)
    assert cache.get("j1") is None


async def test_a_cancelled_waiter_leaves_the_check_to_the_others() -> None:
    cache, db = UserCache(2.0), _Database(_user())
    first = asyncio.create_task(cache.load_once("j1", db.load))
    second = asyncio.create_task(cache.load_once("j1", db.load))
    await asyncio.sleep(0)
    first.cancel()
    db.release.set()
    assert (await second).jti == "j1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert db.calls == 1


@pytest.mark.parametrize("invalidate", ["forget", "forget_user", "clear"])
async def test_a_check_in_flight_across_an_invalidation_is_not_cached(invalidate: str) -> None:
    """A user disabled while their token's check was reading the database: that read is not served later."""
    cache, db = UserCache(2.0), _Database(_user())
    waiter = asyncio.create_task(cache.load_once("j1", db.load))
    await asyncio.sleep(0)
    {"forget": lambda: cache.forget("j1"), "forget_user": lambda: cache.forget_user("u1"), "clear": cache.clear}[
        invalidate
    ]()
    later = _Database(_user(role="admin"))
    later.release.set()
    assert (await cache.load_once("j1", later.load)).role == "admin"  # started after: its own check
    db.release.set()
    assert (await waiter).role == "user"
    assert cache.get("j1") == _user(role="admin")  # the later check filled the cache; the stale one did not
    assert (db.calls, later.calls) == (1, 1)


async def test_without_a_cache_every_request_runs_its_own_check() -> None:
    cache, db = UserCache(0.0), _Database(_user())
    db.release.set()
    await asyncio.gather(*(cache.load_once("j1", db.load) for _ in range(3)))
    assert db.calls == 3
    assert cache.get("j1") is None

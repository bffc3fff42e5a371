"""argon2id password hashing off the event loop, with a bound on concurrent hashes (64 MiB each).

Unknown emails go through `verify_dummy`, the same work as a real verify, so timing does not tell
an unknown account from a wrong password.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ("PasswordService",)


class PasswordService:
    """Create inside the running loop (it owns an `asyncio.Semaphore`)."""

    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int, concurrency: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism)
        self._slots = asyncio.Semaphore(max(1, concurrency))
        # A real hash of a random password with the current parameters: verifying against it costs
        # exactly what verifying a real account costs.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._verify_sync, stored_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend the same work as `verify` for an account that does not exist."""
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def _verify_sync(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

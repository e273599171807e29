"""Password hashes: argon2id through argon2-cffi, with the cost of ``[users]``
(``hash_time_cost``, ``hash_memory_cost``, ``hash_parallelism``), computed off the event
loop (``anyio.to_thread``).

A login for an account that does not exist verifies the password against a dummy hash
of the same cost, so an unknown email and a wrong password take the same time and get
the same answer.

>>> from .config import parse
>>> p = Passwords(parse({"hash_time_cost": 1, "hash_memory_cost": 64,
...                      "hash_parallelism": 1}))
>>> h = p.hash_now("correct horse battery")
>>> h.startswith("$argon2id$"), p.verify_now(h, "correct horse battery"), p.verify_now(None, "x")
(True, True, False)
"""

from __future__ import annotations

import secrets

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .config import UsersConfig

__all__ = ["Passwords"]


class Passwords:
    """Hashes and verifies passwords at the config's cost."""

    def __init__(self, config: UsersConfig) -> None:
        self.hasher = PasswordHasher(time_cost=config.hash_time_cost,
                                     memory_cost=config.hash_memory_cost,
                                     parallelism=config.hash_parallelism)
        # what an unknown account's login is verified against: a hash of a random
        # password at the same cost (never matched)
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    def hash_now(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify_now(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored`` (None: the dummy, never)."""
        try:
            self.hasher.verify(stored or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return False
        return stored is not None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self.hash_now, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        return await anyio.to_thread.run_sync(self.verify_now, stored, password)

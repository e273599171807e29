"""Rate limits: a token bucket per key, kept in the store and shared by every node.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second;
taking one is a short write transaction (on PostgreSQL serialised per key by an
advisory lock), so two nodes drawing from the same key together stay within its
rate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from engine.store import SqlStore
from engine.store.schema import rate_buckets

__all__ = ["Drawn", "RateLimit", "draw", "give_back_in", "limit_for", "take"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate: float  # tokens per second
    burst: float = 1.0  # tokens at most (a full bucket lets this many through at once)

    def __post_init__(self) -> None:
        for label, value in (("rate", self.rate), ("burst", self.burst)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"a rate limit's {label} must be > 0, got {value!r}")
        if self.burst < 1:
            raise ValueError(f"a rate limit's burst must be >= 1 token, got {self.burst!r}")


def limit_for(limits: Mapping[str, RateLimit], key: str) -> RateLimit | None:
    """The limit of ``key``: its own, else that of its prefix before the first ':'
    (``"sms"`` limits every ``"sms:<customer>"`` key, each with its own bucket)."""
    return limits.get(key) or limits.get(key.split(":", 1)[0])


@dataclass(frozen=True, slots=True)
class Drawn:
    """What drawing a token from a bucket found: ``wait`` 0 when one was taken, else the
    seconds until one is there (nothing taken); ``left`` the tokens left in it."""

    wait: float
    left: float


def _bucket(conn: Connection, key: str, limit: RateLimit, change: float) -> Drawn:
    """Add ``change`` tokens to ``key``'s bucket (-1 takes one, only when there is one;
    +1 gives one back, up to its burst) in the caller's transaction: the one statement
    of the token bucket for both databases."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                     {"k": "rate:" + key})
    now = time.time()
    row = conn.execute(sa.select(rate_buckets.c.tokens, rate_buckets.c.updated_at)
                       .where(rate_buckets.c.key == key)).first()
    tokens = limit.burst if row is None else min(
        limit.burst, row.tokens + max(0.0, now - row.updated_at) * limit.rate)
    wait = 0.0
    if change >= 0 or tokens + change >= 0:
        tokens = min(limit.burst, tokens + change)
    else:
        wait = (-change - tokens) / limit.rate
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        rate_buckets).values(key=key, tokens=tokens, updated_at=now)
    conn.execute(insert.on_conflict_do_update(
        index_elements=["key"], set_={"tokens": tokens, "updated_at": now}))
    return Drawn(wait=wait, left=tokens)


async def draw(store: SqlStore, key: str, limit: RateLimit) -> Drawn:
    """Take a token from ``key``'s bucket if there is one; what is left either way."""
    return await store.transaction(lambda conn: _bucket(conn, key, limit, -1.0))


async def take(store: SqlStore, key: str, limit: RateLimit) -> float:
    """Take a token from ``key``'s bucket: 0 if taken, else how many seconds until one
    is there (nothing taken)."""
    return (await draw(store, key, limit)).wait


def give_back_in(conn: Connection, key: str, limit: RateLimit) -> None:
    """Return a token taken from ``key``'s bucket (a refund), in the caller's
    transaction; a full bucket stays full."""
    _bucket(conn, key, limit, 1.0)

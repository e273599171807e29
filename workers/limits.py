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

__all__ = ["RateLimit", "limit_for", "take"]


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


async def take(store: SqlStore, key: str, limit: RateLimit) -> float:
    """Take a token from ``key``'s bucket: 0 if taken, else how many seconds until one
    is there (nothing taken)."""
    def step(conn: Connection) -> float:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                         {"k": "rate:" + key})
        now = time.time()
        row = conn.execute(sa.select(rate_buckets.c.tokens, rate_buckets.c.updated_at)
                           .where(rate_buckets.c.key == key)).first()
        tokens = limit.burst if row is None else min(
            limit.burst, row.tokens + max(0.0, now - row.updated_at) * limit.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / limit.rate
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
            rate_buckets).values(key=key, tokens=tokens, updated_at=now)
        conn.execute(insert.on_conflict_do_update(
            index_elements=["key"], set_={"tokens": tokens, "updated_at": now}))
        return wait

    return await store.transaction(step)

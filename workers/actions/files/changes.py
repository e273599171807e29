"""The change feed: every completed file operation is the ``work.completed`` event of
its work, whose output records what it did (``op``, ``bucket``, ``key``; ``to_bucket``
and ``to_key`` for a copy or a move; ``size`` and ``sha256`` of what was written). An
app follows a bucket from Python with :func:`changes` over the store's event feed, or
through the API's ``fileChanges`` subscription (or ``workEvents`` of type
``work.completed``); each change's ``cursor`` resumes after it, nothing missed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any

from engine.events import WORK_COMPLETED, RecordedEvent
from engine.store.feed import Feed

__all__ = ["CHANGES", "Change", "change_of", "changes"]

CHANGES = ("upload", "delete", "copy", "move")  # the operations that change a bucket


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One completed file operation: ``cursor`` (the event's feed position),
    ``work_id``, ``op``, ``bucket``, ``key`` and the whole record."""

    cursor: int
    work_id: str
    op: str
    bucket: str
    key: str | None
    record: dict[str, Any] = field(default_factory=dict)

    def touches(self, bucket: str) -> bool:
        return bucket in (self.bucket, self.record.get("to_bucket"))


def change_of(recorded: RecordedEvent, saga: str) -> Change | None:
    """The change a ``work.completed`` event of a work of ``saga`` records (None: not a
    file operation)."""
    output = recorded.event.payload.get("output")
    if recorded.type != WORK_COMPLETED or not saga.startswith("files.") or \
            not isinstance(output, dict) or "op" not in output:
        return None
    return Change(cursor=recorded.position or 0, work_id=recorded.work_id,
                  op=str(output["op"]), bucket=str(output.get("bucket")),
                  key=output.get("key"), record=dict(output))


async def changes(feed: Feed, *, bucket: str | None = None,
                  ops: Collection[str] = CHANGES, after: int | None = None
                  ) -> AsyncIterator[Change]:
    """The file operations completed after cursor ``after`` (None: from now on), of
    these kinds, touching ``bucket`` (or any), as they complete::

        async for change in changes(feed, bucket="avatars", after=0):
            print(change.op, change.key)
    """
    sagas: dict[str, str] = {}
    async with feed.subscribe(after=after, types=(WORK_COMPLETED,)) as events:
        async for recorded in events:
            saga = sagas.get(recorded.work_id)
            if saga is None:
                row = await feed.store.work(recorded.work_id)
                saga = str((row or {}).get("saga", ""))
                if len(sagas) > 10_000:
                    sagas.clear()
                sagas[recorded.work_id] = saga
            found = change_of(recorded, saga)
            if found is None or found.op not in ops or \
                    (bucket is not None and not found.touches(bucket)):
                continue
            yield found

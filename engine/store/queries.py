"""Read models for lists: keyset (cursor) pages of works, counts, the stage runs of many
works at once. Beside the store, not in it: :mod:`engine.store.sql` writes and loads."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..events import RecordedEvent
from .schema import commands, stage_runs, works
from .sql import _STATUS, _WORKS, HELD_BACK_STATUSES, SqlStore, _shown

if TYPE_CHECKING:
    from .inbox import SentCommand

__all__ = ["WORK_ORDERS", "count_works", "decode_cursor", "encode_cursor", "events_of",
           "pending_commands_of", "stage_runs_of", "works_by_id", "works_page"]

# what a works list may be ordered by: the column, and whether it may be NULL (a work not
# started or not finished yet); ties are broken by the work id. Only creation time has
# indexes (with saga and status): the others sort the matching works
WORK_ORDERS: dict[str, bool] = {
    "created_at": False, "updated_at": False, "priority": False, "started_at": True,
    "finished_at": True, "duration": True, "saga": False, "status": False,
}


def _order_key(order: str) -> Any:
    """The sort key of a works list by ``order``: the column; a NULL time (not started
    or not finished yet) counts as later than any, so it leads a descending list."""
    if order == "status":  # as shown (a held-back work is waiting), as cursors carry it
        return _STATUS
    column = works.c[order]
    if not WORK_ORDERS[order]:
        return column
    return sa.func.coalesce(column, sa.literal(_LAST))


_LAST = 1e300  # stands for a NULL time in a sort key: after any real one


def _check_order(order: str) -> None:
    if order not in WORK_ORDERS:
        raise ValueError(f"a works list is ordered by one of {sorted(WORK_ORDERS)}, "
                         f"got {order!r:.60}")


def encode_cursor(row: dict[str, Any], order: str = "created_at") -> str:
    """An opaque cursor after ``row`` in a works list ordered by ``order`` (the row's
    value of it and its id)."""
    _check_order(order)
    value = row[order]
    if value is None and WORK_ORDERS[order]:
        value = _LAST
    raw = json.dumps([order, value, row["work_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str, order: str = "created_at") -> tuple[Any, str]:
    """The (value of ``order``, work id) a cursor names; a ``ValueError`` for a cursor
    this module did not make or made for another order."""
    try:
        made_for, value, work_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(made_for, str) or not isinstance(work_id, str):
            raise TypeError
    except Exception:
        raise ValueError(f"{cursor!r:.60} is not a cursor of this list") from None
    if made_for != order:
        raise ValueError(f"cursor {cursor!r:.60} is of a list ordered by {made_for!r:.40}, "
                         f"not by {order!r:.40}")
    valid = isinstance(value, str) if order in ("saga", "status") else \
        isinstance(value, (int, float)) and not isinstance(value, bool)
    if not valid:
        raise ValueError(f"{cursor!r:.60} is not a cursor of this list")
    return value, work_id


def _filtered(query: Any, saga: Sequence[str] | None, status: Sequence[str] | None) -> Any:
    if saga:
        query = query.where(works.c.saga.in_(list(saga)))
    if status:
        wanted = list(status)
        # a pending or running work held back by the nodes shows as waiting (see
        # sql._STATUS): only then is the shown status not the column's, which the
        # indexes cover
        held = {"waiting", *HELD_BACK_STATUSES}
        shown = _STATUS if held & set(wanted) else works.c.status
        query = query.where(shown.in_(wanted))
    return query


async def works_page(store: SqlStore, *, first: int, after: str | None = None,
                     saga: Sequence[str] | None = None, status: Sequence[str] | None = None,
                     order: str = "created_at", descending: bool = True,
                     ) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``first`` works after cursor ``after``, ordered by ``order`` (one of
    :data:`WORK_ORDERS`; highest first when ``descending``), and whether more follow.
    By creation time a page is read by the index on (created_at, work_id): it costs
    the same on page 1 and page 1,000; pages are keyset pages whatever the order."""
    if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first <= 1000:
        raise ValueError(f"first must be a whole number from 0 to 1000, got {first!r}")
    _check_order(order)
    query = _filtered(_WORKS, saga, status)
    value = _order_key(order)
    if after is not None:
        seen, work_id = decode_cursor(after, order)
        key = sa.tuple_(value, works.c.work_id)
        bound = sa.tuple_(sa.literal(seen), sa.literal(work_id))
        query = query.where(key < bound if descending else key > bound)
    if descending:
        query = query.order_by(value.desc(), works.c.work_id.desc())
    else:
        query = query.order_by(value, works.c.work_id)
    async with store.reader.connect() as conn:
        rows = (await conn.execute(query.limit(first + 1))).mappings().all()
    found = [_shown(r) for r in rows]
    return found[:first], len(found) > first


async def count_works(store: SqlStore, *, saga: Sequence[str] | None = None,
                      status: Sequence[str] | None = None) -> int:
    if status and {"pending", "waiting"} & set(status):
        # the shown status of a pending work depends on its lease (held back: waiting)
        inner = _filtered(_WORKS, saga, status).subquery()
        query = sa.select(sa.func.count()).select_from(inner)
    else:  # one lease row per work at most: the join changes no count, so leave it out
        query = _filtered(sa.select(sa.func.count()).select_from(works), saga, status)
    async with store.reader.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def stage_runs_of(store: SqlStore, work_ids: Sequence[str]
                        ) -> dict[str, list[dict[str, Any]]]:
    """The stage runs of each of ``work_ids`` (by path), in one query per 500 works."""
    ids = list(dict.fromkeys(work_ids))
    found: dict[str, list[dict[str, Any]]] = {w: [] for w in ids}
    async with store.reader.connect() as conn:
        for start in range(0, len(ids), 500):
            rows = await conn.execute(sa.select(stage_runs).where(
                stage_runs.c.work_id.in_(ids[start:start + 500])).order_by(
                stage_runs.c.work_id, stage_runs.c.path))
            for row in rows.mappings():
                found[row["work_id"]].append(dict(row))
    return found


async def pending_commands_of(store: SqlStore, work_ids: Sequence[str]
                              ) -> dict[str, list[SentCommand]]:
    """The commands sent to each of ``work_ids`` that its holder has not taken yet (the
    ones numbered above its ``commands_applied``), in order, in one query per 500."""
    from .inbox import SentCommand

    ids = list(dict.fromkeys(work_ids))
    found: dict[str, list[SentCommand]] = {w: [] for w in ids}
    async with store.reader.connect() as conn:
        for start in range(0, len(ids), 500):
            query = sa.select(commands).join(works, works.c.work_id == commands.c.work_id) \
                .where(commands.c.work_id.in_(ids[start:start + 500]),
                       commands.c.number > works.c.commands_applied) \
                .order_by(commands.c.work_id, commands.c.number)
            for row in (await conn.execute(query)).mappings():
                found[row["work_id"]].append(SentCommand.of(row))
    return found


async def works_by_id(store: SqlStore, work_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The rows (as :meth:`SqlStore.work` shows them) of those of ``work_ids`` that
    exist, in one query per 500."""
    ids = list(dict.fromkeys(work_ids))
    found: dict[str, dict[str, Any]] = {}
    async with store.reader.connect() as conn:
        for start in range(0, len(ids), 500):
            rows = await conn.execute(_WORKS.where(works.c.work_id.in_(ids[start:start + 500])))
            for row in rows.mappings():
                shown = _shown(row)
                found[shown["work_id"]] = shown
    return found


async def events_of(store: SqlStore, work_ids: Sequence[str], *, after: int = 0,
                    first: int = 100, types: Sequence[str] | None = None
                    ) -> dict[str, list[RecordedEvent]]:
    """A page of events of each of ``work_ids`` (seq above ``after``, of ``types`` when
    given, at most ``first`` each), in one query per 500 works: a list of works showing
    their events costs one query, not one per work."""
    from .codec import decode_event
    from .schema import events

    ids = list(dict.fromkeys(work_ids))
    found: dict[str, list[RecordedEvent]] = {w: [] for w in ids}
    async with store.reader.connect() as conn:
        for start in range(0, len(ids), 500):
            numbered = sa.select(events, sa.func.row_number().over(
                partition_by=events.c.work_id, order_by=events.c.seq).label("n")).where(
                events.c.work_id.in_(ids[start:start + 500]), events.c.seq > after,
                *([events.c.type.in_(list(types))] if types is not None else [])).subquery()
            query = sa.select(*[numbered.c[c.name] for c in events.columns]).where(
                numbered.c.n <= first).order_by(numbered.c.work_id, numbered.c.seq)
            for row in (await conn.execute(query)).mappings():
                found[row["work_id"]].append(decode_event(dict(row)))
    return found

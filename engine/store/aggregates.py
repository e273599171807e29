"""Group-by with reducers over works and stage runs: what index pages chart.

Rows are grouped by some of their fields (a saga, a status, a stage template, a worker,
a node, an error type) and optionally by a time bucket, and each group folds one value
per row with a reducer: ``count``, ``sum``, ``avg``, ``min``, ``max`` or ``p95``. The
value is a numeric field of the row (``duration``, ...) or a CEL expression that maps
the row (``work`` or ``stage``, with its fields) to a number: the language of
breakpoints, never Python. Plain fields with count, sum, avg, min and max are folded by
the database; p95 and expressions fold in Python over the rows the filters keep.

>>> REDUCERS
('count', 'sum', 'avg', 'min', 'max', 'p95')
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ..expressions import parse_expression
from .schema import stage_runs, works
from .sql import SqlStore

__all__ = ["GROUPS", "NUMBERS", "REDUCERS", "aggregate"]

REDUCERS = ("count", "sum", "avg", "min", "max", "p95")
# what each kind of row may be grouped by, and folded over
GROUPS = {"works": ("saga", "status", "worker", "node", "error_type", "definition"),
          "stage_runs": ("saga", "template", "status")}
NUMBERS = {"works": ("duration", "priority", "stages_done", "stages_total", "last_seq"),
           "stage_runs": ("duration", "attempts")}
_TABLES = {"works": works, "stage_runs": stage_runs}
_TIMES = {"works": "created_at", "stage_runs": "started_at"}
_NAMES = {"works": "work", "stage_runs": "stage"}
_MAX_ROWS = 1_000_000  # rows folded in Python at most (p95, expressions)


def _fold(reducer: str, values: list[float]) -> float | None:
    if reducer == "count":
        return float(len(values))
    if not values:
        return None
    if reducer == "sum":
        return math.fsum(values)
    if reducer == "avg":
        return math.fsum(values) / len(values)
    if reducer == "min":
        return min(values)
    if reducer == "max":
        return max(values)
    ordered = sorted(values)  # p95: nearest rank
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


async def aggregate(store: SqlStore, *, over: str = "works", group_by: Sequence[str] = (),
                    reducer: str = "count", field: str | None = None,
                    expression: str | None = None, bucket: float | None = None,
                    saga: Sequence[str] | None = None, status: Sequence[str] | None = None,
                    since: float | None = None, until: float | None = None,
                    ) -> list[dict[str, Any]]:
    """One row per group: ``group`` (the grouped fields, and ``bucket``: the start of the
    time bucket, when asked for), ``value`` (the reducer's fold) and ``count`` (the rows
    in the group), ordered by group. Raises ``ValueError`` naming the argument at fault."""
    if over not in _TABLES:
        raise ValueError(f"over must be one of {sorted(_TABLES)}, got {over!r}")
    table = _TABLES[over]
    unknown = [g for g in group_by if g not in GROUPS[over]]
    if unknown:
        raise ValueError(f"{over} cannot be grouped by {unknown[0]!r}; by any of "
                         f"{', '.join(GROUPS[over])}")
    if reducer not in REDUCERS:
        raise ValueError(f"reducer must be one of {', '.join(REDUCERS)}, got {reducer!r}")
    if field is not None and expression is not None:
        raise ValueError("fold a field or an expression, not both")
    if field is not None and field not in NUMBERS[over]:
        raise ValueError(f"{over} have no number {field!r} to fold; one of "
                         f"{', '.join(NUMBERS[over])}")
    if reducer != "count" and field is None and expression is None:
        raise ValueError(f"reducer {reducer!r} needs a field or an expression to fold")
    if bucket is not None and (isinstance(bucket, bool) or not math.isfinite(bucket)
                               or bucket <= 0):
        raise ValueError(f"bucket must be a number of seconds > 0, got {bucket!r}")
    mapping = None
    if expression is not None:
        mapping = parse_expression(expression, names={_NAMES[over]})  # ExpressionError
    time_column = table.c[_TIMES[over]]
    keys: list[Any] = [table.c[g] for g in group_by]
    labels = list(group_by)
    if bucket is not None:
        if store.dialect == "postgresql":
            start = sa.func.floor(time_column / bucket) * bucket
        else:  # SQLite has no floor(); times are positive, so truncation is the floor
            start = sa.cast(time_column / bucket, sa.BigInteger) * bucket
        keys.append(start.label("bucket"))
        labels.append("bucket")
    filters: list[Any] = []
    if saga:
        filters.append(table.c.saga.in_(list(saga)))
    if status:
        filters.append(table.c.status.in_(list(status)))
    if since is not None:
        filters.append(time_column >= since)
    if until is not None:
        filters.append(time_column < until)
    if bucket is not None:
        filters.append(time_column.is_not(None))
    in_sql = mapping is None and reducer != "p95"
    async with store.reader.connect() as conn:
        if in_sql:
            folds: dict[str, Any] = {"count": sa.func.count, "sum": sa.func.sum,
                                     "avg": sa.func.avg, "min": sa.func.min,
                                     "max": sa.func.max}
            folded: Any = sa.func.count() if reducer == "count" and field is None else \
                folds[reducer](table.c[str(field)])
            query = sa.select(*keys, folded.label("value"), sa.func.count().label("rows"))
            query = query.where(*filters).group_by(*keys).order_by(*keys)
            found = (await conn.execute(query)).all()
            return [{"group": dict(zip(labels, row[:len(labels)], strict=True)),
                     "value": None if row[-2] is None else float(row[-2]),
                     "count": int(row[-1])} for row in found]
        columns = [table.c[c.name] for c in table.columns] if mapping is not None else \
            [*keys, table.c[str(field)]] if field is not None else keys
        if mapping is not None and bucket is not None:
            columns = [*columns, keys[-1]]
        query = sa.select(*columns).where(*filters).limit(_MAX_ROWS)
        rows = (await conn.execute(query)).mappings().all()
    groups: dict[tuple[Any, ...], list[float]] = {}
    sizes: dict[tuple[Any, ...], int] = {}
    for row in rows:
        key = tuple(row[label] for label in labels)
        sizes[key] = sizes.get(key, 0) + 1
        values = groups.setdefault(key, [])
        if mapping is not None:
            value = mapping.evaluate({_NAMES[over]: _plain(row)})
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"expression {expression!r} gave {value!r:.60} for a row; "
                                 "it must give a number")
            values.append(float(value))
        elif field is not None:
            if row[field] is not None:
                values.append(float(row[field]))
        else:
            values.append(1.0)
    return [{"group": dict(zip(labels, key, strict=True)),
             "value": _fold(reducer, groups[key]), "count": sizes[key]}
            for key in sorted(groups, key=lambda k: tuple("" if v is None else v for v in k))]


def _plain(row: Any) -> dict[str, Any]:
    """A row as an expression sees it: JSON columns decoded, nothing that is not data."""
    found: dict[str, Any] = {}
    for key, value in dict(row).items():
        if key in ("input", "output", "error", "failure", "waiting", "breakpoints") and \
                isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        found[key] = value
    return found

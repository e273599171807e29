"""Group-by with reducers over works and stage runs: what index pages chart.

Rows are grouped by some of their fields (a saga, a status, a stage template, a worker,
a node, an error type) and optionally by a time bucket, and each group folds one value
per row with a reducer: ``count``, ``sum``, ``avg``, ``min``, ``max`` or ``p95``, or one
registered in Python (a ``WorkerApp``'s ``reducers``: a name and a function from the
list of a group's values to a number). The
value is a numeric field of the row (``duration``, ...) or a CEL expression that maps
the row (``work`` or ``stage``, with its fields) to a number: the language of
breakpoints, never Python. Plain fields with count, sum, avg, min and max are folded by
the database; p95, registered reducers and expressions fold in Python over the rows
the filters keep. Time buckets and the ``since``/``until`` window go by one of the
row's times (``TIMES``): when works were created, started or finished.

>>> REDUCERS
('count', 'sum', 'avg', 'min', 'max', 'p95')
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..expressions import parse_expression
from .schema import stage_runs, works
from .sql import SqlStore

__all__ = ["GROUPS", "NUMBERS", "REDUCERS", "TIMES", "Reducer", "aggregate", "check_reducers",
           "plain_row"]

# a reducer registered in Python: a group's values (never empty for a field or an
# expression; ones for count-like use without either) to one number, or None
Reducer = Callable[[list[float]], float | int | None]

REDUCERS = ("count", "sum", "avg", "min", "max", "p95")
# what each kind of row may be grouped by, and folded over
GROUPS = {"works": ("saga", "status", "worker", "node", "error_type", "definition"),
          "stage_runs": ("saga", "template", "status")}
NUMBERS = {"works": ("duration", "priority", "stages_done", "stages_total", "last_seq"),
           "stage_runs": ("duration", "attempts")}
_TABLES = {"works": works, "stage_runs": stage_runs}
# the times a row may be bucketed and windowed by, the first the default
TIMES = {"works": ("created_at", "started_at", "finished_at"),
         "stage_runs": ("started_at", "finished_at")}
_NAMES = {"works": "work", "stage_runs": "stage"}
_MAX_ROWS = 1_000_000  # rows folded in Python at most (p95, expressions)


def check_reducers(reducers: Mapping[str, Reducer]) -> dict[str, Reducer]:
    """Registered reducers as given to :func:`aggregate`, or ``ValueError`` naming the
    one at fault (a built-in's name, a name that is not a word, not a function)."""
    found: dict[str, Reducer] = {}
    for name, function in reducers.items():
        if not isinstance(name, str) or not name.replace("_", "a").isalnum() \
                or not name[:1].isalpha():
            raise ValueError(f"a reducer's name must be a word (letters, digits, _), "
                             f"got {name!r}")
        if name in REDUCERS:
            raise ValueError(f"reducer {name!r} is built in: register it under another name")
        if not callable(function):
            raise ValueError(f"reducer {name!r} must be a function of a list of numbers, "
                             f"got {function!r:.60}")
        found[name] = function
    return found


def _custom(name: str, function: Reducer, values: list[float]) -> float | None:
    try:
        value = function(list(values))
    except Exception as exc:
        raise ValueError(f"reducer {name!r} failed on a group of {len(values)} values: "
                         f"{type(exc).__name__}: {exc}") from exc
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise ValueError(f"reducer {name!r} gave {value!r:.60}; it must give a finite "
                         "number or None")
    return float(value)


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
                    time: str | None = None, reducers: Mapping[str, Reducer] | None = None,
                    ) -> list[dict[str, Any]]:
    """One row per group: ``group`` (the grouped fields, and ``bucket``: the start of the
    time bucket, when asked for), ``value`` (the reducer's fold) and ``count`` (the rows
    in the group), ordered by group. Buckets, ``since`` and ``until`` go by ``time``
    (one of ``TIMES[over]``, the first by default; rows without it are left out of a
    bucketed fold). ``reducers``: those registered besides the built-in ones. Raises
    ``ValueError`` naming the argument at fault."""
    custom = dict(reducers or {})
    if over not in _TABLES:
        raise ValueError(f"over must be one of {sorted(_TABLES)}, got {over!r}")
    table = _TABLES[over]
    unknown = [g for g in group_by if g not in GROUPS[over]]
    if unknown:
        raise ValueError(f"{over} cannot be grouped by {unknown[0]!r}; by any of "
                         f"{', '.join(GROUPS[over])}")
    if reducer not in REDUCERS and reducer not in custom:
        raise ValueError(f"reducer must be one of {', '.join([*REDUCERS, *sorted(custom)])}, "
                         f"got {reducer!r}")
    if time is not None and time not in TIMES[over]:
        raise ValueError(f"{over} have no time {time!r}; one of {', '.join(TIMES[over])}")
    if field is not None and expression is not None:
        raise ValueError("fold a field or an expression, not both")
    if field is not None and field not in NUMBERS[over]:
        raise ValueError(f"{over} have no number {field!r} to fold; one of "
                         f"{', '.join(NUMBERS[over])}")
    if reducer != "count" and reducer not in custom and field is None and expression is None:
        raise ValueError(f"reducer {reducer!r} needs a field or an expression to fold")
    if bucket is not None and (isinstance(bucket, bool) or not math.isfinite(bucket)
                               or bucket <= 0):
        raise ValueError(f"bucket must be a number of seconds > 0, got {bucket!r}")
    mapping = None
    if expression is not None:
        mapping = parse_expression(expression, names={_NAMES[over]})  # ExpressionError
    time_column = table.c[time or TIMES[over][0]]
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
    in_sql = mapping is None and reducer not in ("p95", *custom)
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
            value = mapping.evaluate({_NAMES[over]: plain_row(row)})
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"expression {expression!r} gave {value!r:.60} for a row; "
                                 "it must give a number")
            values.append(float(value))
        elif field is not None:
            if row[field] is not None:
                values.append(float(row[field]))
        else:
            values.append(1.0)
    function = custom.get(reducer)
    return [{"group": dict(zip(labels, key, strict=True)),
             "value": _fold(reducer, groups[key]) if function is None
             else _custom(reducer, function, groups[key]), "count": sizes[key]}
            for key in sorted(groups, key=lambda k: tuple("" if v is None else v for v in k))]


def plain_row(row: Any) -> dict[str, Any]:
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

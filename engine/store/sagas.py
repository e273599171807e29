"""Sagas in the store: sagas given as data, and which sagas are disabled.

Each row of ``sagas`` is one saga: its definition as data (:mod:`engine.sagadata`), or
none for a saga registered in code that is only enabled or disabled here; whether it is
enabled (who disabled it, when and why); a version, 1 when created and one more at
every change; who made the first and the last change, and when.

- :func:`put_saga` creates or replaces a saga given as data, checked first: built with
  the caller's functions, its sagas used by name resolved against the caller's code
  sagas and the data sagas stored; a name a code saga has is refused.
- :func:`enable_saga` and :func:`disable_saga` change whether new works of any saga
  start (:meth:`engine.Runtime.start` refuses those of a disabled one; its works
  already started go on).
- :func:`delete_saga` deletes a saga given as data, refused while unfinished works of
  it exist or another stored saga uses it by name.
- :func:`get_saga` and :func:`list_sagas` read them.

Every change is one transaction, serialised with every other change (PostgreSQL: an
advisory lock; SQLite: its write lock), and a refused change writes nothing. On
PostgreSQL a change NOTIFYs :data:`CHANNEL` at its commit; :func:`fingerprint` is what
a poller compares (it changes with every change, a deletion included). Worker nodes
load the sagas from here and follow their changes (:mod:`workers.sagas`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..definitions import Saga, SagaRef, validate_name
from ..errors import ConflictError, DefinitionError, UnknownSagaError, WorkStateError
from ..plan import compile_saga
from ..sagadata import saga_from_data, saga_refs
from ..state import TERMINAL
from .codec import dumps
from .policies import forget_in
from .schema import sagas, works
from .sql import APPEND_LOCK, SqlStore

__all__ = ["CHANNEL", "StoredSaga", "delete_saga", "disable_saga", "enable_saga",
           "fingerprint", "get_saga", "list_sagas", "put_saga"]

_LOG = logging.getLogger("stepsaga.sagas")

CHANNEL = "stepsaga_sagas"  # NOTIFY channel: a saga was put, enabled, disabled or deleted
# taken by every change of the table on PostgreSQL, so checks and writes do not interleave
SAGAS_LOCK = 0x5A6A_0003


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSaga:
    """One row of the store's sagas: ``data`` is None for a saga registered in code."""

    name: str
    data: dict[str, Any] | None
    enabled: bool
    version: int
    disabled_by: str | None
    disabled_at: float | None
    disabled_reason: str | None
    created_by: str
    created_at: float
    updated_by: str
    updated_at: float

    @property
    def in_code(self) -> bool:
        """Whether this is a saga registered in code (only enabled or disabled here)."""
        return self.data is None

    def to_dict(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in self.__slots__}


def _row(row: Any) -> StoredSaga:
    data = row["data"]
    return StoredSaga(
        name=row["name"], data=None if data is None else json.loads(data),
        enabled=bool(row["enabled"]), version=int(row["version"]),
        disabled_by=row["disabled_by"], disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"], created_by=row["created_by"],
        created_at=float(row["created_at"]), updated_by=row["updated_by"],
        updated_at=float(row["updated_at"]))


def _check_by(by: object) -> str:
    if not isinstance(by, str) or not by or len(by) > 200:
        raise ValueError(f"a change of a saga needs who makes it (by=, a non-empty string of "
                         f"at most 200 characters), got {by!r}")
    return by


def _code_names(code_sagas: Sequence[Saga]) -> dict[str, Saga]:
    found: dict[str, Saga] = {}
    for saga in code_sagas:
        if not isinstance(saga, Saga):
            raise TypeError(f"code_sagas must hold Saga definitions, got {saga!r}")
        found[saga.name] = saga
    return found


def _begin(conn: Connection) -> tuple[float, dict[str, StoredSaga]]:
    """In a change's transaction: take the lock, read every row, and the time of this
    change (past every row's ``updated_at``, so the table's maximum grows)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({SAGAS_LOCK})"))
    rows = {r["name"]: _row(r) for r in conn.execute(sa.select(sagas)).mappings()}
    latest = max((r.updated_at for r in rows.values()), default=0.0)
    return max(time.time(), latest + 1e-6), rows


def _notify(conn: Connection, name: str) -> None:
    if conn.dialect.name == "postgresql":  # delivered at the commit, not before
        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, name)))


def _read(conn: Connection, name: str) -> StoredSaga:
    row = conn.execute(sa.select(sagas).where(sagas.c.name == name)).mappings().one()
    return _row(row)


async def put_saga(store: SqlStore, name: str, data: Mapping[str, Any], *,
                   functions: Mapping[str, Callable[..., Any]], by: str,
                   code_sagas: Sequence[Saga] = (), expected_version: int | None = None
                   ) -> StoredSaga:
    """Create saga ``name`` from ``data`` (see :mod:`engine.sagadata`; its ``name``, when
    given, must be ``name``), or replace the data of the saga given as data under that
    name; the row after the change. A new saga is enabled; a replaced one keeps whether
    it is enabled. The same data again changes nothing.

    Refused, with nothing written: data that does not build with ``functions``
    (:class:`~engine.errors.DefinitionError` naming the stage and the field), a name one
    of ``code_sagas`` has or that the store holds as a saga registered in code, a saga
    used by name that is neither one of ``code_sagas`` nor stored as data (or a cycle of
    them), and, with ``expected_version``, a row whose version is another
    (:class:`~engine.errors.ConflictError`; 0 expects no row).
    """
    validate_name(name, "saga")
    by = _check_by(by)
    if not isinstance(data, Mapping):
        raise DefinitionError(f"saga {name!r}: its data must be a JSON object, got "
                              f"{type(data).__name__}")
    given = data.get("name")
    if given is not None and given != name:
        raise DefinitionError(f"saga {name!r}: its data names another saga, {given!r}")
    data = {"name": name, **{k: v for k, v in data.items() if k != "name"}}
    try:
        text = dumps(data)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"saga {name!r}: its data is not JSON: {exc}") from None
    data = json.loads(text)  # what the store gives back is what is checked
    saga = saga_from_data(data, functions)
    code = _code_names(code_sagas)
    if name in code:
        raise DefinitionError(f"saga {name!r} is registered in code; a saga given as data "
                              "needs a name of its own")

    def run(conn: Connection) -> StoredSaga:
        now, rows = _begin(conn)
        old = rows.get(name)
        if expected_version is not None and (old.version if old else 0) != expected_version:
            raise ConflictError(
                f"saga {name!r} is at version {old.version if old else 0} in the store, not "
                f"{expected_version}: it was changed meanwhile; read it again")
        if old is not None and old.in_code:
            raise DefinitionError(f"saga {name!r} is registered in code (the store only "
                                  "enables or disables it); a saga given as data needs a "
                                  "name of its own")
        if old is not None and old.data == data:
            return old
        _check_refs(saga, rows, code, functions)
        values = {"data": text, "updated_by": by, "updated_at": now}
        if old is None:
            conn.execute(sa.insert(sagas).values(
                name=name, enabled=True, version=1, created_by=by, created_at=now, **values))
        else:
            conn.execute(sa.update(sagas).where(sagas.c.name == name).values(
                version=old.version + 1, **values))
        _notify(conn, name)
        return _read(conn, name)

    return await store.transaction(run)


def _check_refs(saga: Saga, rows: Mapping[str, StoredSaga], code: Mapping[str, Saga],
                functions: Mapping[str, Callable[..., Any]]) -> None:
    """The sagas ``saga`` uses by name, and those stored that use it, compile with it."""
    stored = {name: row.data for name, row in rows.items()
              if row.data is not None and name != saga.name and name not in code}
    registry: dict[str, Saga] = dict(code)
    unbuilt: dict[str, str] = {}
    for name, data in stored.items():
        try:
            registry[name] = saga_from_data(data, functions)
        except DefinitionError as exc:
            unbuilt[name] = str(exc)
    registry[saga.name] = saga
    users = {saga.name}  # the stored sagas that use it, directly or not
    grew = True
    while grew:
        grew = False
        for name, data in stored.items():
            if name not in users and saga_refs(data) & users:
                users.add(name)
                grew = True
    for name in sorted(users, key=lambda n: n != saga.name):
        if name in unbuilt:
            continue  # a saga these functions cannot build: its nodes check it
        uses = saga_refs(stored[name]) if name in stored else _refs_of(saga)
        missing = sorted(uses & unbuilt.keys())
        if missing:
            raise DefinitionError(
                f"saga {name!r} uses saga {missing[0]!r} by name, which does not build with "
                f"these functions: {unbuilt[missing[0]]}")
        try:
            compile_saga(registry[name], registry)
        except (DefinitionError, UnknownSagaError) as exc:
            where = "" if name == saga.name else \
                f"saga {name!r}, stored, uses saga {saga.name!r} by name and would not " \
                "compile with it: "
            raise DefinitionError(f"{where}{exc}") from None


def _refs_of(saga: Saga) -> set[str]:
    """The names a built saga uses by name (its SagaRef stages, at any depth)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, SagaRef):
            found.add(node.saga)
        for child in node.children():
            walk(child)

    walk(saga)
    return found


async def _toggle(store: SqlStore, name: str, *, enabled: bool, by: str, reason: str,
                  code_sagas: Sequence[Saga]) -> StoredSaga:
    by = _check_by(by)
    if not isinstance(reason, str):
        raise ValueError(f"reason must be a string, got {reason!r}")
    code = _code_names(code_sagas)

    def run(conn: Connection) -> StoredSaga:
        now, rows = _begin(conn)
        old = rows.get(name)
        if old is None and name not in code:
            known = sorted({*code, *rows})
            raise UnknownSagaError(f"no saga is registered as {name!r}, in code or as data "
                                   f"(known: {', '.join(known) or 'none'})")
        if old is not None and old.enabled == enabled:
            return old
        values: dict[str, Any] = {
            "enabled": enabled, "updated_by": by, "updated_at": now,
            "disabled_by": None if enabled else by, "disabled_at": None if enabled else now,
            "disabled_reason": None if enabled else reason}
        if old is None:
            conn.execute(sa.insert(sagas).values(name=name, data=None, version=1,
                                                 created_by=by, created_at=now, **values))
        else:
            conn.execute(sa.update(sagas).where(sagas.c.name == name).values(
                version=old.version + 1, **values))
        _notify(conn, name)
        return _read(conn, name)

    return await store.transaction(run)


async def enable_saga(store: SqlStore, name: str, *, by: str,
                      code_sagas: Sequence[Saga] = ()) -> StoredSaga:
    """New works of saga ``name`` may start again; the row after. ``name`` is a saga
    stored here or one of ``code_sagas`` (else :class:`~engine.errors.UnknownSagaError`).
    Enabling an enabled saga changes nothing."""
    return await _toggle(store, name, enabled=True, by=by, reason="", code_sagas=code_sagas)


async def disable_saga(store: SqlStore, name: str, *, by: str, reason: str = "",
                       code_sagas: Sequence[Saga] = ()) -> StoredSaga:
    """No new works of saga ``name`` start (its works already started go on); the row
    after, saying who disabled it, when and why. ``name`` as for :func:`enable_saga`.
    Disabling a disabled saga changes nothing."""
    return await _toggle(store, name, enabled=False, by=by, reason=reason,
                         code_sagas=code_sagas)


async def delete_saga(store: SqlStore, name: str, *, by: str) -> StoredSaga:
    """Delete saga ``name``, given as data; the row it was. Refused, with nothing
    deleted: an unknown name (:class:`~engine.errors.UnknownSagaError`), a saga
    registered in code (disable it instead), one another stored saga uses by name
    (:class:`~engine.errors.DefinitionError`, naming it), and one with unfinished works
    (:class:`~engine.errors.WorkStateError`, naming how many: let them end, or cancel
    them, first). Worker nodes stop claiming its works."""
    by = _check_by(by)

    def run(conn: Connection) -> StoredSaga:
        if conn.dialect.name == "postgresql":  # no work of it is created meanwhile
            conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
        _, rows = _begin(conn)
        old = rows.get(name)
        if old is None:
            raise UnknownSagaError(f"no saga is stored as {name!r} (stored: "
                                   f"{', '.join(sorted(rows)) or 'none'})")
        if old.in_code:
            raise DefinitionError(f"saga {name!r} is registered in code: only a saga given "
                                  "as data can be deleted (disable it instead)")
        users = sorted(other for other, row in rows.items()
                       if other != name and row.data is not None and name in saga_refs(row.data))
        if users:
            raise DefinitionError(f"saga {name!r} is used by name by saga {users[0]!r}"
                                  f"{f' (and {len(users) - 1} more)' if len(users) > 1 else ''}"
                                  "; change or delete that one first")
        counts = conn.execute(
            sa.select(works.c.status, sa.func.count()).where(
                works.c.saga == name, works.c.status.not_in(sorted(TERMINAL)))
            .group_by(works.c.status)).all()
        unfinished = sum(int(n) for _, n in counts)
        if unfinished:
            statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts))
            raise WorkStateError(
                f"saga {name!r} has {unfinished} unfinished work{'s' if unfinished > 1 else ''}"
                f" ({statuses}); let them end, or cancel them, before deleting it")
        conn.execute(sa.delete(sagas).where(sagas.c.name == name))
        forget_in(conn, by=by, saga=name)  # the policies naming it go with it
        _notify(conn, name)
        return old

    deleted = await store.transaction(run)
    _LOG.info("saga %s (version %d) was deleted by %s", name, deleted.version, by)
    return deleted


async def get_saga(store: SqlStore, name: str) -> StoredSaga | None:
    """The row of saga ``name``, or None."""
    async with store.reader.connect() as conn:
        row = (await conn.execute(sa.select(sagas).where(sagas.c.name == name))).mappings()\
            .first()
    return None if row is None else _row(row)


async def list_sagas(store: SqlStore) -> list[StoredSaga]:
    """Every row, by name."""
    async with store.reader.connect() as conn:
        rows = (await conn.execute(sa.select(sagas).order_by(sagas.c.name))).mappings().all()
    return [_row(row) for row in rows]


async def fingerprint(store: SqlStore) -> tuple[int, float | None]:
    """How many rows there are and the latest change's time: it differs after any change
    (a change's time is past every row's, and a deletion lowers the count)."""
    async with store.reader.connect() as conn:
        count, latest = (await conn.execute(
            sa.select(sa.func.count(), sa.func.max(sagas.c.updated_at)))).one()
    return int(count), None if latest is None else float(latest)

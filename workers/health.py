"""Service health: checks, a dependency graph, and a history in the store.

Each :class:`HealthCheck` names a service (a database, an SMTP server, a vault), an
async check that raises when the service is unhealthy, and the services it depends
on. A service is *available* when its own check passes and every service it depends
on is available: a failing vault makes what needs it unavailable, and nothing else.
Every round of checks is written to ``health_checks``, the history a health page and
``/healthz`` read, and :func:`follow` follows from a cursor (a row's position: on
PostgreSQL every round takes :data:`HEALTH_CHECKS_LOCK` first, so positions follow
commit order and a reader never skips a row that commits later with an earlier one).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa

from engine.services import dependency_order
from engine.store import SqlStore
from engine.store.schema import health_checks

__all__ = ["HEALTH_CHECKS_LOCK", "Health", "HealthCheck", "follow", "history", "readiness"]

HEALTH_CHECKS_LOCK = 0x5A6A_0004  # PostgreSQL advisory lock: health_checks in commit order
_PRUNE_EVERY = 100  # rounds of checks between prunings of a node's old rows


@dataclass(frozen=True, slots=True)
class HealthCheck:
    name: str
    check: Callable[[], Awaitable[None] | None]
    depends_on: tuple[str, ...] = ()
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a health check needs a service name, got {self.name!r}")
        if not callable(self.check):
            raise ValueError(f"the check of service {self.name!r} is not callable")
        if not self.timeout > 0:
            raise ValueError(f"the check of service {self.name!r} needs a timeout > 0")
        object.__setattr__(self, "depends_on", tuple(self.depends_on))


class Health:
    """The health of a set of services, checked every ``interval`` seconds."""

    def __init__(self, store: SqlStore, checks: Iterable[HealthCheck], *, node: str,
                 interval: float = 2.0, keep: float = 7 * 86400.0) -> None:
        self.store = store
        self.node = node
        self.interval = interval
        if not keep > 0:
            raise ValueError(f"keep must be a number of seconds > 0, got {keep!r}")
        self.keep = keep  # the history is kept this long, then pruned
        self._rounds = 0
        self.checks = {c.name: c for c in checks}
        for check in self.checks.values():
            for dep in check.depends_on:
                if dep not in self.checks:
                    raise ValueError(f"service {check.name!r} depends on {dep!r}, which has "
                                     "no health check")
        self._order = dependency_order({n: c.depends_on for n, c in self.checks.items()})
        # until the first round, every service counts as available
        self.status: dict[str, tuple[bool, str]] = {n: (True, "") for n in self.checks}
        self._changed = anyio.Event()

    def available(self, name: str) -> tuple[bool, str]:
        """(available, why not); a service without a check is always available."""
        return self.status.get(name, (True, ""))

    async def changed(self) -> None:
        """Wait for the next round of checks that changes something."""
        await self._changed.wait()

    async def _one(self, check: HealthCheck) -> tuple[bool, str]:
        try:
            with anyio.fail_after(check.timeout):
                result = check.check()
                if inspect.isawaitable(result):
                    await result
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, ""

    async def check_all(self) -> dict[str, tuple[bool, str]]:
        """One round: every check, availability through the dependencies, history."""
        own: dict[str, tuple[bool, str]] = {}
        async with anyio.create_task_group() as tg:
            async def run(check: HealthCheck) -> None:
                own[check.name] = await self._one(check)

            for check in self.checks.values():
                tg.start_soon(run, check)
        status: dict[str, tuple[bool, str]] = {}
        for name in self._order:  # dependencies first
            ok, detail = own[name]
            if not ok:
                status[name] = (False, f"{name} failed its check: {detail}")
                continue
            down = [d for d in self.checks[name].depends_on if not status[d][0]]
            status[name] = ((False, f"{name} needs {down[0]}: {status[down[0]][1]}")
                            if down else (True, ""))
        now = time.time()
        rows = [{"service": n, "ok": own[n][0], "available": status[n][0],
                 "detail": own[n][1] or status[n][1], "node": self.node, "time": now,
                 "depends_on": json.dumps(list(self.checks[n].depends_on))}
                for n in self._order]
        if rows:
            with anyio.CancelScope(shield=True):  # a shutdown must not cut it off mid-way
                async with self.store.engine.begin() as conn:
                    if self.store.dialect == "postgresql":
                        await conn.execute(sa.text(
                            f"SELECT pg_advisory_xact_lock({HEALTH_CHECKS_LOCK})"))
                    await conn.execute(health_checks.insert(), rows)
                    self._rounds += 1
                    if self._rounds % _PRUNE_EVERY == 1:  # the history does not grow forever
                        await conn.execute(health_checks.delete().where(
                            health_checks.c.node == self.node,
                            health_checks.c.time < now - self.keep))
        if status != self.status:
            self.status = status
            self._changed.set()
            self._changed = anyio.Event()
        return status


async def history(store: SqlStore, service: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    """The latest health check results, newest first; ``depends_on``: the services it
    depended on as the node that checked it knew them (None: a row from before that
    was recorded)."""
    query = sa.select(health_checks).order_by(health_checks.c.position.desc()).limit(limit)
    if service is not None:
        query = query.where(health_checks.c.service == service)
    async with store.reader.connect() as conn:
        return [_decoded(r) for r in (await conn.execute(query)).mappings()]


def _decoded(row: Any) -> dict[str, Any]:
    return {**row, "depends_on": None if row["depends_on"] is None
            else json.loads(row["depends_on"])}


async def follow(store: SqlStore, *, after: int | None, interval: float,
                 limit: int = 500) -> AsyncIterator[dict[str, Any]]:
    """Each health check result recorded after position ``after`` (None: from now on),
    in commit order, read every ``interval`` seconds; resuming from a row's
    ``position`` misses none and repeats none."""
    if after is None:
        async with store.reader.connect() as conn:
            after = int((await conn.execute(
                sa.select(sa.func.max(health_checks.c.position)))).scalar() or 0)
    while True:
        query = (sa.select(health_checks).where(health_checks.c.position > after)
                 .order_by(health_checks.c.position).limit(limit))
        async with store.reader.connect() as conn:
            rows = [_decoded(r) for r in (await conn.execute(query)).mappings()]
        for row in rows:
            after = row["position"]
            yield row
        if len(rows) < limit:
            await anyio.sleep(interval)


async def readiness(store: SqlStore, node: Any = None, *, within: float = 2.0
                    ) -> dict[str, Any]:
    """Whether this process can do its work now (``/readyz``): the store answers
    within ``within`` seconds, its schema is at the revision this code needs (or at a
    newer one, which a newer node migrated it to while this one ran), and workers run
    (``node``: this process's worker node, its workers active; without one, an
    API-only node: some live node publishes its catalog). ``services``: the
    health graph of ``node`` as its latest round found it (a service down makes the
    works that need it wait, not the node unready).

    Returns ``{"ready": bool, "checks": {name: {"ok", "detail"}}, "services": {...}}``.
    """
    from engine.store.catalog import published
    from engine.store.migrate import head_revision, is_newer, schema_revision

    checks: dict[str, dict[str, Any]] = {}
    needed = head_revision()
    try:
        with anyio.fail_after(within):
            found = await schema_revision(store)
            live = None if node is not None else await published(store)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, TimeoutError):
            why = f"no answer within {within} s"
        checks["store"] = {"ok": False, "detail": f"the store is unreachable: {why}"[:500]}
        checks["migrations"] = {"ok": False, "detail": "unknown: the store did not answer"}
        live = []
    else:
        checks["store"] = {"ok": True, "detail": ""}
        if found == needed:
            checks["migrations"] = {"ok": True, "detail": ""}
        elif is_newer(found):  # a newer node migrated under this one: it runs on
            checks["migrations"] = {"ok": True, "detail": (
                f"the store's schema is at revision {found}, newer than this node's "
                f"{needed}: it runs on (migrations only add), but would not start again; "
                "upgrade it")}
        else:
            checks["migrations"] = {"ok": False, "detail": (
                f"the store's schema is at revision {found or 'none'}; this node needs "
                f"{needed} (run stepsaga migrate)")}
    if node is not None:
        active = [name for name, w in node.workers().items() if w["status"] == "active"]
        running = node.running
        checks["workers"] = {"ok": running and bool(active), "detail": (
            "" if running and active else "the node is not running" if not running
            else "the node has no active worker (draining or removed)")}
    elif live is not None and checks["store"]["ok"]:
        nodes = sorted({n for p in live for n in p.nodes})
        checks["workers"] = {"ok": bool(nodes), "detail": "" if nodes else
                             "no worker node is live on this store"}
    else:
        checks["workers"] = {"ok": False, "detail": "unknown: the store did not answer"}
    health = getattr(node, "health", None)
    services = {} if health is None else {
        name: {"available": ok, "detail": detail} for name, (ok, detail) in
        health.status.items()}
    return {"ready": all(c["ok"] for c in checks.values()), "checks": checks,
            "services": services}

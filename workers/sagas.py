"""Following the sagas of the store: the sagas given as data, built with this process's
functions and registered on its runtimes, and which sagas are disabled.

A :class:`SagaFollower` reads the store's sagas (:mod:`engine.store.sagas`), builds each
one given as data with the app's functions, and keeps the runtimes attached to it in
step: a saga put is registered (or replaces the one before; works running keep their
plan), a deleted one is unregistered, and a disabled one (given as data or in code)
starts no new work. A saga that does not build here (it names a function this app does
not have, or uses by name a saga that is not here) is not loaded: it is logged once,
naming it and why, and the works of it are left for a node that has what it needs. A
saga given as data named like one of this app's code sagas is left too: the code saga
runs.

Worker nodes follow the store (:class:`workers.node.WorkerNode`: at start, then at
every poll interval and, on PostgreSQL, at each NOTIFY of a change). Any other process
with a runtime can do the same::

    follower = SagaFollower(store, code_sagas=app.sagas, functions=app.functions)
    await follower.refresh()
    follower.attach(runtime)
    tg.start_soon(follower.follow, 1.0)   # or call refresh() after a change it made
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio

from engine import DefinitionError, Runtime, Saga, UnknownSagaError, compile_saga
from engine.sagadata import saga_from_data
from engine.store import SqlStore
from engine.store.sagas import StoredSaga, fingerprint, list_sagas

__all__ = ["SagaFollower"]

_LOG = logging.getLogger("stepsaga.sagas")


class SagaFollower:
    """Keeps the attached runtimes in step with the store's sagas; see the module
    docstring. ``on_change`` is awaited after a refresh that changed what is loaded or
    disabled (a node publishes its catalog again). ``owner`` names this process in its
    logs."""

    def __init__(self, store: SqlStore, *, code_sagas: Sequence[Saga] = (),
                 functions: Mapping[str, Callable[..., Any]] | None = None,
                 owner: str = "this process",
                 on_change: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.code = {saga.name: saga for saga in code_sagas}
        self.functions: Mapping[str, Callable[..., Any]] = functions or {}
        self.owner = owner
        self.on_change = on_change
        self.loaded: dict[str, Saga] = {}  # the sagas given as data registered here
        self.rows: dict[str, StoredSaga] = {}  # the store's rows, as last read
        self._versions: dict[str, int] = {}  # loaded saga -> the row version it was built of
        self._fingerprint: tuple[int, float | None] | None = None
        self._runtimes: list[Runtime] = []
        self._logged: set[tuple[str, int]] = set()  # (saga, row version) left, logged
        # disabled saga -> (by whom, when), as last applied
        self._seen_disabled: dict[str, tuple[str | None, float | None]] = {}
        self._wake = anyio.Event()
        self._lock = anyio.Lock()

    @property
    def sagas(self) -> list[Saga]:
        """What a runtime of this process registers: the code sagas, then the sagas given
        as data loaded here."""
        return [*self.code.values(), *self.loaded.values()]

    def disabled(self) -> dict[str, StoredSaga]:
        """The disabled sagas, by name."""
        return {name: row for name, row in self.rows.items() if not row.enabled}

    def attach(self, runtime: Runtime) -> None:
        """Keep ``runtime`` in step from now on: the sagas loaded here that it lacks are
        registered on it (give it :attr:`sagas` when making it), and the disabled ones
        disabled."""
        held = runtime.sagas
        missing = [saga for name, saga in self.loaded.items() if held.get(name) is not saga]
        # given the sagas of a moment ago: one deleted since goes
        extra = [name for name in held if name not in self.code and name not in self.loaded]
        if missing or extra:
            runtime.update_sagas(register=missing, unregister=extra, replace=True)
        for name, row in self.disabled().items():
            runtime.disable(name, by=row.disabled_by, reason=row.disabled_reason or "",
                            at=row.disabled_at)
        self._runtimes.append(runtime)

    def detach(self, runtime: Runtime) -> None:
        if runtime in self._runtimes:
            self._runtimes.remove(runtime)

    def wake(self) -> None:
        """A change was announced (a NOTIFY): :meth:`follow` refreshes at once."""
        self._wake.set()

    async def follow(self, poll_interval: float) -> None:
        """Refresh at every poll interval, or at once when woken, until cancelled. A
        store that is away is logged and tried again at the next round."""
        while True:
            with anyio.move_on_after(poll_interval):
                await self._wake.wait()
            woken = self._wake.is_set()
            self._wake = anyio.Event()
            try:
                with anyio.CancelScope(shield=True):  # never leave a query half-way
                    await self.refresh(force=woken)
            except Exception:
                _LOG.exception("%s could not read the sagas of the store", self.owner)

    async def refresh(self, *, force: bool = False) -> bool:
        """Read the store's sagas and bring the attached runtimes in step; whether
        anything changed. Without ``force``, only when the table's fingerprint changed."""
        async with self._lock:
            seen = await fingerprint(self.store)
            if seen == self._fingerprint and not force:
                return False
            rows = {row.name: row for row in await list_sagas(self.store)}
            self._fingerprint = seen  # read first: a change made meanwhile is seen next time
            loaded, versions = self._build(rows)
            gone = [name for name in self.loaded if name not in loaded]
            put = [saga for name, saga in loaded.items()
                   if versions[name] != self._versions.get(name)]
            was_disabled = set(self.disabled())
            self.rows = rows
            now_disabled = self.disabled()
            changed = bool(gone or put) or was_disabled != set(now_disabled) or any(
                self._disabled_differs(name, row) for name, row in now_disabled.items())
            for runtime in self._runtimes:
                try:
                    runtime.update_sagas(register=put, unregister=gone, replace=True)
                except (DefinitionError, UnknownSagaError):  # compiled above: not expected
                    _LOG.exception("%s could not register the sagas of the store on a "
                                   "runtime", self.owner)
                for name in was_disabled - set(now_disabled):
                    runtime.enable(name)
                for name, row in now_disabled.items():
                    runtime.disable(name, by=row.disabled_by,
                                    reason=row.disabled_reason or "", at=row.disabled_at)
            self.loaded, self._versions = loaded, versions
            self._seen_disabled = {name: (row.disabled_by, row.disabled_at)
                                   for name, row in now_disabled.items()}
            for name in gone:
                _LOG.info("%s no longer runs saga %s (deleted, or it does not build here)",
                          self.owner, name)
            for saga in put:
                _LOG.info("%s runs saga %s from the store (version %d of its row)",
                          self.owner, saga.name, versions[saga.name])
        if changed and self.on_change is not None:
            await self.on_change()
        return changed

    def _disabled_differs(self, name: str, row: StoredSaga) -> bool:
        return self._seen_disabled.get(name) != (row.disabled_by, row.disabled_at)

    def _build(self, rows: Mapping[str, StoredSaga]) -> tuple[dict[str, Saga], dict[str, int]]:
        """The sagas given as data that build and compile here, and their row versions."""
        built: dict[str, Saga] = {}
        versions: dict[str, int] = {}
        for name, row in sorted(rows.items()):
            if row.data is None:
                continue
            if name in self.code:
                self._leave(row, "it has the name of a saga registered in code here, which "
                                 "runs instead")
                continue
            if name in self.loaded and self._versions.get(name) == row.version:
                built[name] = self.loaded[name]  # the same object: no change for runtimes
            else:
                try:
                    built[name] = saga_from_data(row.data, self.functions)
                except DefinitionError as exc:
                    self._leave(row, str(exc))
                    continue
            versions[name] = row.version
        # a saga that uses by name one that is not here does not compile: leave it, and
        # then those that use it, until what is left compiles
        while True:
            registry = {**self.code, **built}
            broken = {}
            for name, saga in built.items():
                try:
                    compile_saga(saga, registry)
                except (DefinitionError, UnknownSagaError) as exc:
                    broken[name] = str(exc)
            if not broken:
                return built, versions
            for name, why in broken.items():
                self._leave(rows[name], why)
                del built[name], versions[name]

    def _leave(self, row: StoredSaga, why: str) -> None:
        """Log once per saga and row version why this process does not load it."""
        key = (row.name, row.version)
        if key in self._logged:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged.add(key)
        _LOG.warning("%s does not load saga %s (version %d of its row) and does not claim "
                     "its works: %s", self.owner, row.name, row.version, why)

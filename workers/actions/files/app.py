"""The files pack as a :class:`workers.node.WorkerApp`.

Load it with ``stepsaga serve --app workers.actions.files:app --config stepsaga.toml``
(or ``stepsaga worker``); its ``[files]`` section is documented in
:mod:`workers.actions.files.config`. ``serve`` adds the asset routes beside
``/graphql`` and the pack's GraphQL fields (:mod:`.api`). From Python::

    app = files_app(config=parse({...}))
    async with Runtime(app.sagas, store=store, gate=NodeGate(store, holder="me")) as rt:
        staged = stage(app_config, open("cat.jpg", "rb"))
        done = await rt.run("files.upload", {"bucket": "avatars", "key": "cat.jpg",
                                             "content_type": "image/jpeg", **staged})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine import Clock
from workers.node import ApiRef, WorkerApp
from workers.schedules import Schedule

from .config import FilesConfig, parse
from .sagas import file_sagas

__all__ = ["app", "files_app", "sweep_schedules"]


def sweep_schedules(config: FilesConfig) -> list[Schedule]:
    """The hourly sweep of stale staged uploads (none when ``staging_ttl`` is 0)."""
    if not config.staging_ttl:
        return []
    return [Schedule(name="files.sweep", saga="files.sweep", cron="17 * * * *",
                     overlap="skip")]


def files_app(settings: Mapping[str, Any] | None = None, *,
              config: FilesConfig | None = None, api: bool = True,
              clock: Clock | None = None) -> WorkerApp:
    """The pack's sagas and the sweep's schedule (and, with ``api``, its part of the
    API) from ``config`` or the ``files`` section of ``settings`` (what
    :func:`graphql_api.config.load` returns)."""
    if config is None:
        config = parse((settings or {}).get("files"))
    parts = [ApiRef("graphql_api.packs.files:files_part", (config,))] if api else []
    return WorkerApp(sagas=file_sagas(config, clock=clock), api=parts,
                     schedules=sweep_schedules(config), schedule_prefix="files.")


def app(settings: Mapping[str, Any] | None = None) -> WorkerApp:
    """What ``--app workers.actions.files:app`` loads (with the config's settings)."""
    return files_app(settings)

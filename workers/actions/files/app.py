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

from workers.node import WorkerApp

from .config import FilesConfig, parse
from .sagas import file_sagas

__all__ = ["app", "files_app"]


def files_app(settings: Mapping[str, Any] | None = None, *,
              config: FilesConfig | None = None, api: bool = True) -> WorkerApp:
    """The pack's sagas (and, with ``api``, its part of the API) from ``config`` or the
    ``files`` section of ``settings`` (what :func:`graphql_api.config.load` returns)."""
    if config is None:
        config = parse((settings or {}).get("files"))
    parts: list[Any] = []
    if api:
        from .api import files_part

        parts.append(files_part(config))
    return WorkerApp(sagas=file_sagas(config), api=parts)


def app(settings: Mapping[str, Any] | None = None) -> WorkerApp:
    """What ``--app workers.actions.files:app`` loads (with the config's settings)."""
    return files_app(settings)

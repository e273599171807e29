"""The messaging pack as a :class:`workers.node.WorkerApp`.

Load it on a node with ``stepsaga serve --app workers.actions.messaging:app --config
stepsaga.toml`` (or ``stepsaga worker``); its ``[messaging]`` section is documented in
:mod:`workers.actions.messaging.config`. The node's gate applies the channels' rate
limits. From Python::

    app = messaging_app(config=parse({...}))
    async with SqlStore.open(url) as store:
        channels = Channels(store, config)            # create, pause, resume, purge...
        async with Runtime(app.sagas, store=store) as rt:
            work_id = await send_message(rt, "email", "welcome", "ada@example.com",
                                         {"name": "Ada"})

Through the API (the pack's part, :mod:`.part`): ``messagingChannels``,
``createMessagingChannel``, ``pauseMessagingChannel``, ``resumeMessagingChannel``,
``purgeMessagingChannel``, ``deleteMessagingChannel``, ``sendMessage`` and
``retryMessage``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.node import ApiRef, WorkerApp

from .config import MessagingConfig, parse
from .sagas import MessagingPack, messaging_sagas

__all__ = ["app", "messaging_app"]


def messaging_app(settings: Mapping[str, Any] | None = None, *,
                  config: MessagingConfig | None = None) -> WorkerApp:
    """The pack's saga, rate limits and API part, from ``config`` or the ``messaging``
    section of ``settings`` (what :func:`graphql_api.config.load` returns)."""
    if config is None:
        config = parse((settings or {}).get("messaging"))
    pack = MessagingPack(config)
    return WorkerApp(sagas=messaging_sagas(config, pack), rate_limits=config.rate_limits(),
                     api=[ApiRef("graphql_api.packs.messaging:messaging_part", (pack,))])


def app(settings: Mapping[str, Any] | None = None) -> WorkerApp:
    """What ``--app workers.actions.messaging:app`` loads (with the config's settings)."""
    return messaging_app(settings)

"""A pack's hook that sends a message: what the backups pack's failure hook
(:mod:`workers.actions.backups.notify`) names to tell someone a backup failed.

:func:`notifier` makes an async function of one dict (the hook's argument): it queues
a message of ``messaging.send`` on the store, the dict being the template's context,
for the nodes running the messaging pack to deliver. Its work id is derived from the
dict's ``key`` (a backup failure's is its work id), so the hook called again for the
same failure (it is called at least once) sends one message. In the module a config
names (``[backups] notify = "myapp.hooks:backup_failed"``)::

    from workers.actions.messaging import notifier, parse

    backup_failed = notifier("postgresql+asyncpg://...", parse({...}), channel="ops",
                             template="backup_failed", to="-1001234567890")

with a template such as ``Backup {{ job }} failed at {{ stage }}: {{ error }}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engine import Runtime
from engine.store import SqlStore

from .config import MessagingConfig
from .errors import MessageInputError
from .sagas import message, messaging_sagas, send_message

__all__ = ["notifier"]


def notifier(store_url: str, config: MessagingConfig, *, channel: str, template: str,
             to: str) -> Callable[[Mapping[str, Any]], Awaitable[str]]:
    """A hook sending each dict it is given as the context of ``template`` to ``to``
    over ``channel``; it returns the message's work id."""
    message(channel, template, to)  # the fields' types checked now, not at a failure
    sagas = messaging_sagas(config)

    async def notify(told: Mapping[str, Any]) -> str:
        if not isinstance(told, Mapping):
            raise MessageInputError(f"a notifier is given a dict, got {told!r:.60}")
        key = told.get("key") or json.dumps(dict(told), sort_keys=True, default=str)
        work_id = "msg-" + hashlib.sha256(f"{channel}\0{to}\0{key}".encode()).hexdigest()[:40]
        async with SqlStore.open(store_url, create=False) as store, \
                Runtime(sagas, store=store) as runtime:
            return await send_message(runtime, channel, template, to, dict(told),
                                      work_id=work_id)

    return notify

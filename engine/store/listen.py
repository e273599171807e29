"""LISTEN on PostgreSQL channels for as long as it runs, connecting again when the
connection drops (the server restarted): the one way the event feed and worker nodes
hear NOTIFYs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import anyio
import anyio.abc
import sqlalchemy as sa

from .sql import SqlStore

__all__ = ["listen"]

_LOG = logging.getLogger("stepsaga.listen")


async def listen(store: SqlStore, handlers: Mapping[str, Callable[[str], None]], *,
                 who: str, on_connect: Callable[[bool], None] | None = None,
                 task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                 ) -> None:
    """Call ``handlers[channel](payload)`` for each NOTIFY on those channels, until
    cancelled. ``on_connect(first)`` runs once the listeners are in place, at the first
    connection and after each reconnect (a NOTIFY may have been missed meanwhile).
    ``task_status.started()`` follows the first connection, whose failure is raised;
    later ones are tried again every second. ``who`` names the listener in the log."""
    import asyncpg

    url = sa.make_url(store.config.url).set(drivername="postgresql")
    started = False
    while True:
        try:
            conn = await asyncpg.connect(url.render_as_string(hide_password=False))
        except (OSError, asyncpg.PostgresError):
            if not started:
                raise
            await anyio.sleep(1.0)
            continue
        try:
            lost = anyio.Event()
            conn.add_termination_listener(lambda *_, lost=lost: lost.set())
            for channel, handler in handlers.items():
                await conn.add_listener(
                    channel, lambda _c, _p, _ch, payload, handler=handler: handler(payload))
            if on_connect is not None:
                on_connect(not started)
            if not started:
                started = True
                task_status.started()
            await lost.wait()
            _LOG.warning("%s lost its LISTEN connection; connecting again", who)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if not started:
                raise
            await anyio.sleep(1.0)
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close(timeout=2)

"""Telling someone that a backup failed: the seam a message channel plugs into.

A ``backups.backup`` work that fails compensates its stages in reverse; the last
compensation, its first stage's, calls the failure hook once the partial object and
upload are gone. The hook is a callable, given

- in Python: ``backups_app(notify=fn)`` (or ``backup_sagas(config, notify=fn)``), or
- in the config: ``[backups] notify = "module:function"``, imported when the app is built
  (an error naming ``backups.notify`` if it cannot be).

It is called with one dict, the failure (:func:`failure`), whose keys are kept from
version to version (new ones may be added; ``version`` says which)::

    {"version": 1, "key": "<work id>",            # the same on every repeat: dedupe on it
     "saga": "backups.backup", "work_id": "...", "job": "nightly", "source": "app",
     "target": "offsite", "backup_id": "...",     # null when it failed before its id
     "stage": "transfer", "error": "the message",
     "error_type": "workers.actions.backups.errors.TargetError",
     "failed_at": 1767225600.0}                   # the pack's clock

A plain function runs in a worker thread (it may send mail or call a chat service's
API and block); a coroutine function is awaited. The call is at least once: a crash
or a retry calls it again with the same ``key``. A hook that raises is tried again
with the compensation's retries (3 attempts); when all fail the work ends
``compensation_failed`` rather than ``failed``, so a person sees that nobody was told.

The messaging pack plugs in here: its function (for instance one starting a work of
its send saga with the failure as input, keyed on ``key``) is named in ``notify``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["VERSION", "Notify", "failure", "tell"]

VERSION = 1
Notify = Callable[[dict[str, Any]], Any]


def failure(*, saga: str, work_id: str, job: str | None, source: str | None,
            target: str | None, backup_id: str | None, reason: Any,
            failed_at: float) -> dict[str, Any]:
    """The message for a failed backup; ``reason`` is the engine's failure (its
    ``path``, ``type`` and ``message``) or an exception."""
    return {"version": VERSION, "key": work_id, "saga": saga, "work_id": work_id,
            "job": job, "source": source, "target": target, "backup_id": backup_id,
            "stage": getattr(reason, "path", None),
            "error": getattr(reason, "message", None) or str(reason),
            "error_type": getattr(reason, "type", None) or type(reason).__name__,
            "failed_at": failed_at}


async def tell(notify: Notify, message: dict[str, Any]) -> None:
    """Call the hook with the message: awaited when it is a coroutine function (or
    returns an awaitable), else run in a worker thread."""
    if inspect.iscoroutinefunction(notify):
        await notify(message)
        return
    result = await anyio.to_thread.run_sync(functools.partial(notify, message))
    if inspect.isawaitable(result):
        await result

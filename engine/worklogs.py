"""What stage code logs through ``ctx.logger``, kept per work in the store
(``work_logs``) and read beside its events, and the formatter of structured logs.

Every record of ``ctx.logger`` carries the work id, the stage path and the attempt
(``extra``: ``work_id``, ``stage``, ``attempt``) and goes to Python's logging as usual.
A runtime with a store also keeps it for the work (:class:`WorkLogs`) *fingers
crossed*: records of INFO and above are kept at once; DEBUG records wait in memory
(the last :data:`DEBUG_KEPT` of a work) and are kept only if the work fails
(``failed`` or ``compensation_failed``), dropped when it completes or is cancelled. DEBUG
records are captured whatever the level of the ``stepsaga.work`` logger is, so a
failure shows what led to it without debug logging on everywhere; a record held is
formatted only when it is kept (as a handler of Python's logging formats when it emits),
so a DEBUG record of a work that completes costs little more than a tuple. Records reach the
store in batches, a fraction of a second after they were made (never in the group
commit of the events, which stays as fast as it was).

>>> import logging, json
>>> record = logging.LogRecord("stepsaga.work", logging.INFO, "", 0, "charged %s", ("4 EUR",),
...                            None)
>>> record.work_id, record.stage, record.attempt = "w-1", "pay/charge", 2
>>> json.loads(JsonFormatter().format(record))["work_id"]
'w-1'
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from .store import SqlStore

__all__ = ["DEBUG_KEPT", "ErrorReport", "JsonFormatter", "WorkLogger", "WorkLogs",
           "logs_of"]

DEBUG_KEPT = 1000  # DEBUG records of one work held until it ends, at most (the newest)
_FAILED = frozenset({"failed", "compensation_failed"})
_EXTRA = ("work_id", "stage", "attempt", "saga")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the work id, stage path
    and attempt of records from stage code, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        found: dict[str, Any] = {"time": round(record.created, 6), "level": record.levelname,
                                 "logger": record.name, "message": record.getMessage()}
        for key in _EXTRA:
            value = getattr(record, key, None)
            if value is not None:
                found[key] = value
        if record.exc_info:
            found["exception"] = self.formatException(record.exc_info)
        return json.dumps(found, default=str)


class WorkLogger(logging.LoggerAdapter[logging.Logger]):
    """``ctx.logger``: a logger whose records carry the work id, stage path and attempt,
    and are handed to the work's log (``sink``) whatever the logger's level."""

    def __init__(self, logger: logging.Logger, extra: dict[str, Any],
                 sink: Callable[[int, str, object, tuple[object, ...], str], None] | None
                 ) -> None:
        super().__init__(logger, extra)
        self.sink = sink

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.sink is not None and level >= logging.DEBUG:
            # the message is formatted when the record is kept (as logging formats when a
            # handler emits): a DEBUG record of a work that completes never is
            trailer = ""
            exc = kwargs.get("exc_info")
            if exc:
                info = exc if isinstance(exc, tuple) else None
                trailer = "\n" + ("".join(traceback.format_exception(*info)) if info else
                                  traceback.format_exc())
            self.sink(level, self.logger.name, msg, args, trailer)
        if self.isEnabledFor(level):
            msg, found = self.process(msg, kwargs)
            self.logger.log(level, msg, *args, **found)

    # LoggerAdapter's debug(), info() ... call self.log only when enabled: every level
    # goes through log() here, so DEBUG records reach the sink at any logger level
    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, **kwargs)

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kwargs)


_LEVELS = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARNING",
           logging.ERROR: "ERROR", logging.CRITICAL: "CRITICAL"}


def _row(work_id: str, at: float, level: int, logger: str, path: str, attempt: int,
         msg: object, args: tuple[object, ...], trailer: str,
         node: str | None) -> dict[str, Any]:
    """A ``work_logs`` row of one record."""
    try:
        text = str(msg) % args if args else str(msg)
    except (TypeError, ValueError, KeyError) as exc:  # as logging, never raises for it
        text = f"{msg!r} {args!r} (could not format: {exc})"
    name = _LEVELS.get(level) or logging.getLevelName(level)
    return {"work_id": work_id, "time": at, "level": name, "logger": logger[:200],
            "path": path, "attempt": attempt, "message": (text + trailer)[:20_000],
            "node": node}


class WorkLogs:
    """The logs of the works one runtime drives, on their way to the store."""

    def __init__(self, store: SqlStore, node: str | None) -> None:
        self.store = store
        self.node = node
        self._kept: list[dict[str, Any]] = []
        # work id -> its DEBUG records held, as _row takes them
        self._debug: dict[str, deque[tuple[Any, ...]]] = {}
        self._wake = anyio.Event()

    def sink(self, work_id: str, path: str, attempt: int
             ) -> Callable[[int, str, object, tuple[object, ...], str], None]:
        """What ``ctx.logger`` of one call hands its records to: (level, logger name,
        message, its arguments, what follows it: a traceback or nothing)."""
        node = self.node

        def add(level: int, logger: str, msg: object, args: tuple[object, ...],
                trailer: str) -> None:
            if level > logging.DEBUG:
                self._kept.append(_row(work_id, time.time(), level, logger, path, attempt,
                                       msg, args, trailer, node))
                self._wake.set()
                return
            held = self._debug.get(work_id)
            if held is None:
                held = self._debug[work_id] = deque(maxlen=DEBUG_KEPT)
            # as it came: a row only if the work fails (most complete: nothing to pay)
            held.append((work_id, time.time(), level, logger, path, attempt, msg, args,
                         trailer, node))
        return add

    def ended(self, work_id: str, status: str) -> None:
        """The work ended: its DEBUG records kept if it failed, else dropped."""
        held = self._debug.pop(work_id, None)
        if held and status in _FAILED:
            self._kept.extend(_row(*record) for record in held)
            self._kept.sort(key=lambda r: r["time"])
            self._wake.set()

    def forget(self, work_id: str) -> None:
        """The work left this runtime unfinished (another node goes on): its DEBUG
        records held here are dropped."""
        self._debug.pop(work_id, None)

    async def flush(self) -> None:
        rows, self._kept = self._kept, []
        if not rows:
            return
        from .store.schema import work_logs

        insert = work_logs.insert()
        try:
            with anyio.CancelScope(shield=True):
                # the store's short write transaction: on SQLite one synchronous
                # transaction (on the loop while the write lock is free, else in a thread),
                # not a hand-off per statement through the async driver, which cost a
                # tenth of a small saga's time per record kept
                await self.store.transaction(lambda conn: conn.execute(insert, rows))
        except Exception as exc:  # the store is away: the records are lost, said once
            logging.getLogger("stepsaga.runtime").warning(
                "could not keep %d log records of works: %s", len(rows), exc)

    async def run(self, every: float = 0.2) -> None:
        """Write what was kept, every ``every`` seconds while there is some, until
        cancelled (then once more)."""
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await anyio.sleep(every)  # a batch, not a transaction per record
                await self.flush()
        finally:
            await self.flush()


async def logs_of(store: SqlStore, work_id: str, *, after: int = 0, first: int = 100,
                  levels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """A work's log records after position ``after``, in the order they were kept,
    ``first`` at most, of these levels (None: all). The DEBUG records of a failed work
    are kept when it fails, after the records of higher levels it made meanwhile:
    sort by ``time`` to interleave them."""
    import sqlalchemy as sa

    from .store.schema import work_logs

    if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first <= 10_000:
        raise ValueError(f"first must be a whole number from 0 to 10000, got {first!r}")
    query = (sa.select(work_logs).where(work_logs.c.work_id == work_id,
                                        work_logs.c.position > after)
             .order_by(work_logs.c.position).limit(first))
    if levels is not None:
        query = query.where(work_logs.c.level.in_([lv.upper() for lv in levels]))
    async with store.reader.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReport:
    """What the error-report hook (``Runtime(on_error=...)``) is given when a work ends
    for good on an error: ``failed`` (compensated) or ``compensation_failed``.
    ``exception``: the exception that failed it, when it was raised in this process
    (else None: the error as recorded, with its traceback, is in ``error``)."""

    work_id: str
    saga: str
    status: str
    path: str
    error: dict[str, Any]
    exception: BaseException | None = None

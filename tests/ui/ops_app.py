"""The app the operations pages' browser tests serve (``--app tests.ui.ops_app:app``):
the demo saga, and services with health checks for the services page: a database and
a vault that needs it (both fine), a mailer whose check always fails and a notifier
that needs the mailer (so unavailable though its own check passes). Checked every
half second, so a strip has cells within a few seconds."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.store import SqlStore
from workers.actions import demo_saga
from workers.health import HealthCheck
from workers.node import WorkerApp, WorkerNode, WorkerSpec


async def fine() -> None:
    return None


async def refused() -> None:
    raise ConnectionRefusedError("smtp 127.0.0.1:2525 refused the connection")


@dataclass(frozen=True, kw_only=True)
class QuickChecks(WorkerApp):
    def node(self, store: SqlStore, workers: Iterable[WorkerSpec], **options: Any
             ) -> WorkerNode:
        return super().node(store, workers, health_interval=0.5, **options)


app = QuickChecks(sagas=[demo_saga()], health_checks=[
    HealthCheck("database", fine), HealthCheck("vault", fine, depends_on=("database",)),
    HealthCheck("mailer", refused), HealthCheck("notifier", fine, depends_on=("mailer",))])

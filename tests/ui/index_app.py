"""The app the works index's browser tests serve (``--app tests.ui.index_app:app``): the
demo saga, and a reducer registered in Python, which the index offers beside the
built-in ones: the spread of a group's values (its largest minus its smallest)."""

from __future__ import annotations

from workers.actions import demo_saga
from workers.node import WorkerApp


def spread(values: list[float]) -> float | None:
    return max(values) - min(values) if values else None


app = WorkerApp(sagas=[demo_saga()], reducers={"spread": spread})

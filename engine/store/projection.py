"""The rows of the ``works`` and ``stage_runs`` projections, derived from a work's state.

Both are pure functions of the state, so rows written while the work ran and
rows rebuilt later by replaying its events are identical.
"""

from __future__ import annotations

import re
from typing import Any

from ..state import TERMINAL, StageState, WorkState
from .codec import dumps

__all__ = ["stage_row", "stage_template", "work_row"]

_INDEX = re.compile(r"\[\d+\]")


def stage_template(path: str) -> str:
    """The stage of a saga a run's path is an instance of: ``pack[2]/box`` ->
    ``pack[*]/box``, so one stage can be listed across works and map items."""
    return _INDEX.sub("[*]", path) if "[" in path else path


def _json(value: Any) -> str | None:
    return None if value is None else dumps(value)


def work_row(state: WorkState, current_stage: str | None,
             input_json: str | None = None) -> dict[str, Any]:
    """The ``works`` row; ``input_json`` may pass the input already encoded (it never
    changes during a work)."""
    root = state.stages.get("")
    finished = state.updated_at if state.status in TERMINAL else None
    worker = state.worker
    breakpoints = "[]" if not state.breakpoints else dumps(
        sorted(state.breakpoints.values(), key=lambda b: b["id"]))
    return {
        "work_id": state.work_id, "saga": state.saga, "status": state.display_status,
        "paused": state.paused, "phase": state.phase,
        "input": _json(state.input) if input_json is None else input_json,
        "output": _json(state.output), "error": _json(state.error),
        "failure": _json(state.failure), "current_stage": current_stage or None,
        "stages_done": root.completed_children if root is not None else 0,
        "stages_total": state.stages_total,
        "breakpoints": breakpoints, "last_seq": state.seq, "wake_at": state.wake_at,
        "parent_work_id": state.parent_work_id, "forked_at_seq": state.forked_at_seq,
        "waiting": _json(state.waiting) if state.waiting else None,
        "created_at": state.created_at or 0.0, "updated_at": state.updated_at or 0.0,
        "priority": state.priority, "started_at": state.started_at,
        "finished_at": finished, "duration": None if finished is None or
        state.created_at is None else finished - state.created_at,
        "error_type": _error_type(state), "worker": worker,
        "node": worker.rsplit("/", 1)[0] if worker else None,
        "definition": state.definition, "definition_version": state.definition_version,
        "commands_applied": state.commands_applied,
    }


def _error_type(state: WorkState) -> str | None:
    for found in (state.failure, state.error):
        if isinstance(found, dict):
            error = found.get("error", found)
            if isinstance(error, dict) and isinstance(error.get("type"), str):
                return str(error["type"])
    return None


def stage_row(work_id: str, st: StageState, saga: str = "") -> dict[str, Any]:
    duration = None
    if st.started_at is not None and st.finished_at is not None:
        duration = st.finished_at - st.started_at
    attempts = st.attempt
    return {
        "work_id": work_id, "path": st.path, "status": st.status, "attempts": attempts,
        "started_at": st.started_at, "finished_at": st.finished_at, "duration": duration,
        "error": _json(st.error), "saga": saga, "template": stage_template(st.path),
    }

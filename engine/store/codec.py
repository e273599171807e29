"""Events and states to and from their stored form, with upcasting of old event versions.

An event is stored as its type string, its schema version and its payload as JSON
text, never as an import path. When the payload of a type changes shape, its
version goes up and an upcaster turning version ``n`` into ``n + 1`` is added to
:data:`UPCASTERS`; reading applies them one step at a time, so a stream written
by any earlier version replays in this one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import CorruptEventError
from ..events import EVENT_TYPES, Event, RecordedEvent
from ..state import StageState, WorkState

__all__ = [
    "CURRENT_VERSIONS",
    "UPCASTERS",
    "CorruptEventError",
    "decode_event",
    "decode_state",
    "dumps",
    "encode_event",
    "encode_event_row",
    "encode_state",
]

STATE_VERSION = 2  # 2: WorkState.trace (older nodes replay from the events instead)

# (type, version) -> function turning that version's payload into the next version's
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}

CURRENT_VERSIONS: Mapping[str, int] = {kind: 1 for kind in EVENT_TYPES}


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON (one encoder for all: json.dumps with options builds one per call)."""
    return _ENCODER.encode(value)


def encode_event(recorded: RecordedEvent) -> dict[str, Any]:
    event = recorded.event
    return {
        "work_id": recorded.work_id, "seq": recorded.seq, "type": event.type,
        "version": event.version, "path": event.path, "attempt": event.attempt,
        "payload": dumps(event.payload), "time": recorded.time, "worker": recorded.worker,
    }


# the order of encode_event_row's values: the events table's columns without position
EVENT_ROW = ("work_id", "seq", "type", "version", "path", "attempt", "payload", "time", "worker")


def encode_event_row(recorded: RecordedEvent) -> tuple[Any, ...]:
    """:func:`encode_event` as a tuple in :data:`EVENT_ROW` order (the writer's hot path)."""
    event = recorded.event
    return (recorded.work_id, recorded.seq, event.type, event.version, event.path,
            event.attempt, dumps(event.payload), recorded.time, recorded.worker)


def decode_event(row: Mapping[str, Any], *,
                 versions: Mapping[str, int] | None = None,
                 upcasters: Mapping[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]]
                 | None = None) -> RecordedEvent:
    """A stored row as an event of the current version (``versions`` and ``upcasters``
    default to this engine's)."""
    versions = CURRENT_VERSIONS if versions is None else versions
    upcasters = UPCASTERS if upcasters is None else upcasters
    where = f"event seq {row['seq']} of work {row['work_id']!r}"
    kind = row["type"]
    current = versions.get(kind)
    if current is None:
        raise CorruptEventError(f"{where} has unknown type {kind!r}")
    try:
        payload = json.loads(row["payload"])
    except (TypeError, ValueError) as exc:
        raise CorruptEventError(f"{where} ({kind}) has a payload that is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise CorruptEventError(f"{where} ({kind}) has a payload that is not a JSON object")
    version = int(row["version"])
    if version > current:
        raise CorruptEventError(
            f"{where} ({kind}) has version {version}, newer than this engine's {current}")
    while version < current:
        upcast = upcasters.get((kind, version))
        if upcast is None:
            raise CorruptEventError(f"{where}: no upcaster for {kind} version {version}")
        payload = upcast(payload)
        version += 1
    return RecordedEvent(
        work_id=row["work_id"], seq=int(row["seq"]), time=float(row["time"]),
        worker=row.get("worker"), position=row.get("position"),
        event=Event(type=kind, path=row["path"], attempt=int(row["attempt"]),
                    payload=payload, version=version),
    )


def encode_state(state: WorkState) -> str:
    return dumps(dataclasses.asdict(state))


def decode_state(text: str) -> WorkState:
    data = json.loads(text)
    stages = {path: StageState(**fields) for path, fields in data.pop("stages").items()}
    return WorkState(**data, stages=stages)

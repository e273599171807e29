"""Prometheus metrics of this process (``prometheus-client``), served at ``/metrics`` by
``stepsaga serve`` and ``stepsaga worker``.

Every process counts what it did itself: on many nodes each exports its own figures and
Prometheus adds its ``instance`` and ``job`` labels; sum over them for the cluster. The
gauges read from the store at each scrape (:func:`refresh_from_store`:
``stepsaga_works``, ``stepsaga_queue_depth``) are the same on every node: take one
node's, or ``max`` over instances. The metrics and their labels:

============================================  ===================================  =========
metric                                        labels                               kind
============================================  ===================================  =========
``stepsaga_works_created_total``              saga                                 counter
``stepsaga_works_finished_total``             saga, status (completed, failed,     counter
                                              compensation_failed, cancelled)
``stepsaga_works``                            saga, status (from the store)        gauge
``stepsaga_stage_duration_seconds``           saga, stage (template: ``pack/box``),histogram
                                              outcome (completed, failed)
``stepsaga_retries_total``                    saga, stage, what (transaction,      counter
                                              compensation)
``stepsaga_compensations_total``              saga, stage                          counter
``stepsaga_compensation_failures_total``      saga, stage (one per failed try)     counter
``stepsaga_queue_depth``                      saga (claimable now, from the store) gauge
``stepsaga_queue_wait_seconds``               saga (created or due, to claimed)    histogram
``stepsaga_lease_takeovers_total``            saga (an expired lease claimed)      counter
``stepsaga_commands_total``                   kind, outcome (applied, rejected)    counter
``stepsaga_event_append_seconds``             (a group commit's oldest append)     histogram
``stepsaga_group_commit_events``              (events per group commit)            histogram
``stepsaga_db_query_seconds``                 operation (select, insert, update,   histogram
                                              delete, group_commit, other)
``stepsaga_subscriptions``                    (open in this process)               gauge
``stepsaga_subscription_fanout_seconds``      (event time to delivery)             histogram
``stepsaga_api_request_seconds``              operation (its name or             histogram
                                              ``anonymous``), type (query,
                                              mutation, subscription)
``stepsaga_worker_slots``                     worker                               gauge
``stepsaga_worker_slots_used``                worker                               gauge
``process_*``, ``python_gc_*``, ``python_info``  what prometheus-client collects   various
============================================  ===================================  =========

Only events recorded for real count (not those of a dry run), and only those of a
runtime with ``metrics=True`` (the default; ``Runtime(metrics=False)`` counts nothing
here, nor does a store opened with ``StoreConfig(metrics=False)``: what
``benchmarks/durable.py --observability`` compares). The work and stage
figures are taken where the events become durable (:func:`observe`), one dictionary
lookup per event and a cached labelled child per (saga, stage), so the engine's hot path
stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest

from . import events as ev
from .plan import template_of

if TYPE_CHECKING:
    from .events import RecordedEvent
    from .state import WorkState
    from .store import SqlStore

__all__ = ["API_SECONDS", "APPEND_SECONDS", "COMMANDS", "DB_SECONDS", "FANOUT_SECONDS",
           "GROUP_COMMIT_EVENTS", "LEASE_TAKEOVERS", "QUEUE_WAIT", "SUBSCRIPTIONS",
           "WORKER_SLOTS", "WORKER_SLOTS_USED", "db_operation", "exposition", "observe",
           "refresh_from_store"]

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)

WORKS_CREATED = Counter("stepsaga_works_created", "Works created by this process",
                        ["saga"])
WORKS_FINISHED = Counter("stepsaga_works_finished", "Works this process saw end, by how",
                         ["saga", "status"])
WORKS = Gauge("stepsaga_works", "Works in the store by saga and status (the same on "
              "every node)", ["saga", "status"])
STAGE_SECONDS = Histogram("stepsaga_stage_duration_seconds",
                          "Stage durations, from its start to its end, retries included",
                          ["saga", "stage", "outcome"], buckets=_SLOW)
RETRIES = Counter("stepsaga_retries", "Retries scheduled", ["saga", "stage", "what"])
COMPENSATIONS = Counter("stepsaga_compensations", "Compensations completed",
                        ["saga", "stage"])
COMPENSATION_FAILURES = Counter("stepsaga_compensation_failures",
                                "Compensation tries that failed", ["saga", "stage"])
QUEUE_DEPTH = Gauge("stepsaga_queue_depth", "Works a worker may claim now (the same on "
                    "every node)", ["saga"])
QUEUE_WAIT = Histogram("stepsaga_queue_wait_seconds",
                       "From a queued work's creation (or due time) to its first claim",
                       ["saga"], buckets=_SLOW)
LEASE_TAKEOVERS = Counter("stepsaga_lease_takeovers",
                          "Works claimed whose lease had expired on another holder",
                          ["saga"])
COMMANDS = Counter("stepsaga_commands", "Commands taken by the works this process drives",
                   ["kind", "outcome"])
APPEND_SECONDS = Histogram("stepsaga_event_append_seconds",
                           "From the first append of a group commit to its events being "
                           "durable (the longest any append of it waited)", buckets=_FAST)
GROUP_COMMIT_EVENTS = Histogram("stepsaga_group_commit_events", "Events per group commit",
                                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
DB_SECONDS = Histogram("stepsaga_db_query_seconds", "Database statements and group "
                       "commits", ["operation"], buckets=_FAST)
SUBSCRIPTIONS = Gauge("stepsaga_subscriptions", "Event feed subscriptions open")
FANOUT_SECONDS = Histogram("stepsaga_subscription_fanout_seconds",
                           "From an event's time to its delivery to a subscription",
                           buckets=_FAST)
API_SECONDS = Histogram("stepsaga_api_request_seconds", "GraphQL operations",
                        ["operation", "type"], buckets=_FAST)
WORKER_SLOTS = Gauge("stepsaga_worker_slots", "Works a worker may run at once", ["worker"])
WORKER_SLOTS_USED = Gauge("stepsaga_worker_slots_used", "Works a worker runs now",
                          ["worker"])

_OPERATIONS = {"select": "select", "insert": "insert", "update": "update",
               "delete": "delete", "with": "select"}


def db_operation(statement: str) -> str:
    """The ``operation`` label of a SQL statement."""
    return _OPERATIONS.get(statement.lstrip()[:6].lower().rstrip(), "other")


# labelled children, cached: .labels() takes a lock and builds a tuple each time
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def _created(saga: str, recorded: RecordedEvent, state: WorkState) -> None:
    _child(WORKS_CREATED, saga).inc()


def _finished(saga: str, recorded: RecordedEvent, state: WorkState) -> None:
    _child(WORKS_FINISHED, saga, recorded.type[5:]).inc()  # work.<status>


def _stage_ended(saga: str, recorded: RecordedEvent, state: WorkState) -> None:
    # a leaf ends with its transaction's last event, a composite with stage.completed
    # or stage.failed: whichever event set the stage's end time
    path = recorded.event.path
    st = state.stages.get(path)
    if not path or st is None or st.started_at is None or st.finished_at != recorded.time:
        return
    _child(STAGE_SECONDS, saga, template_of(path), st.status).observe(
        max(0.0, recorded.time - st.started_at))


def _retry(saga: str, recorded: RecordedEvent, state: WorkState) -> None:
    _child(RETRIES, saga, template_of(recorded.event.path),
           str(recorded.event.payload.get("what", "transaction"))).inc()


def _compensated(saga: str, recorded: RecordedEvent, state: WorkState) -> None:
    _child(COMPENSATIONS, saga, template_of(recorded.event.path)).inc()


def _compensation_failed(saga: str, recorded: RecordedEvent, state: WorkState) -> None:
    _child(COMPENSATION_FAILURES, saga, template_of(recorded.event.path)).inc()


def _command(saga: str, recorded: RecordedEvent, state: WorkState) -> None:
    payload = recorded.event.payload
    _child(COMMANDS, str(payload.get("kind")), str(payload.get("outcome"))).inc()


_HANDLERS: dict[str, Callable[[str, RecordedEvent, WorkState], None]] = {
    ev.WORK_CREATED: _created,
    ev.WORK_COMPLETED: _finished, ev.WORK_FAILED: _finished,
    ev.WORK_COMPENSATION_FAILED: _finished, ev.WORK_CANCELLED: _finished,
    ev.STAGE_COMPLETED: _stage_ended, ev.STAGE_FAILED: _stage_ended,
    ev.TRANSACTION_COMPLETED: _stage_ended, ev.TRANSACTION_FAILED: _stage_ended,
    ev.RETRY_SCHEDULED: _retry,
    ev.COMPENSATION_COMPLETED: _compensated, ev.COMPENSATION_FAILED: _compensation_failed,
    ev.WORK_COMMAND: _command,
}


def observe(saga: str, recorded: RecordedEvent, state: WorkState) -> None:
    """Count a durable event of a work of ``saga`` (``state``: the work's state now)."""
    handler = _HANDLERS.get(recorded.event.type)
    if handler is not None:
        handler(saga, recorded, state)


def observe_claim(saga: str, state: WorkState, *, taken_over: bool) -> None:
    """A worker claimed a work: its wait in the queue if it had not started, a takeover
    if its lease had expired on another holder."""
    if taken_over:
        _child(LEASE_TAKEOVERS, saga).inc()
    if state.status == "pending" and state.created_at is not None:
        since = max(state.created_at, state.start_at or 0.0)
        _child(QUEUE_WAIT, saga).observe(max(0.0, time.time() - since))


async def refresh_from_store(store: SqlStore) -> None:
    """Set the gauges read from the store (works by saga and status, queue depth)."""
    import sqlalchemy as sa

    from .store.schema import leases, works

    now = time.time()
    by_status = sa.select(works.c.saga, works.c.status, sa.func.count()).group_by(
        works.c.saga, works.c.status)
    due = (sa.select(leases.c.saga, sa.func.count()).where(leases.c.expires_at < now)
           .group_by(leases.c.saga))
    async with store.reader.connect() as conn:
        statuses = (await conn.execute(by_status)).all()
        depths = (await conn.execute(due)).all()
    WORKS.clear()
    for saga, status, count in statuses:
        WORKS.labels(saga, status).set(count)
    QUEUE_DEPTH.clear()
    for saga, count in depths:
        QUEUE_DEPTH.labels(saga).set(count)


def exposition() -> bytes:
    """This process's metrics in Prometheus's text format."""
    return generate_latest(REGISTRY)

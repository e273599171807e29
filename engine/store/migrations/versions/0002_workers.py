"""Worker nodes: the leases on (and queue of) works, worker events and their projection,
schedules, global locks, rate-limit buckets, health check history.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(64)
NAME = sa.String(200)
POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.add_column("works", sa.Column("waiting", sa.Text))
    op.create_table(
        "leases",
        sa.Column("work_id", ID, primary_key=True),
        sa.Column("saga", NAME, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("owner", NAME),
        sa.Column("worker", NAME),
        sa.Column("token", sa.Integer, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("claimed_at", TIME),
    )
    op.create_index("leases_expires", "leases", ["expires_at"])
    op.create_index("leases_owner", "leases", ["owner"])
    op.create_table(
        "worker_events",
        sa.Column("position", POSITION, primary_key=True, autoincrement=True),
        sa.Column("worker_id", NAME, nullable=False),
        sa.Column("type", sa.String(80), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("time", TIME, nullable=False),
    )
    op.create_index("worker_events_worker", "worker_events", ["worker_id"])
    op.create_table(
        "workers",
        sa.Column("worker_id", NAME, primary_key=True),
        sa.Column("node", NAME, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("sagas", sa.Text),
        sa.Column("host", NAME, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("running", sa.Integer, nullable=False),
        sa.Column("registered_at", TIME, nullable=False),
        sa.Column("heartbeat_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )


    op.create_table(
        "schedules",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("saga", NAME, nullable=False),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("cron", NAME, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("overlap", sa.String(10), nullable=False),
        sa.Column("catch_up", sa.String(10), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("next_at", TIME, nullable=False),
        sa.Column("queued", sa.Text, nullable=False),
        sa.Column("last_tick", TIME),
        sa.Column("last_work_id", ID),
        sa.Column("fired", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "lock_holders",
        sa.Column("name", NAME, primary_key=True),
        sa.Column("holder", NAME, primary_key=True),
        sa.Column("acquired_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
    )
    op.create_table(
        "lock_waiters",
        sa.Column("position", POSITION, primary_key=True, autoincrement=True),
        sa.Column("name", NAME, nullable=False),
        sa.Column("holder", NAME, nullable=False),
        sa.Column("since", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
    )
    op.create_index("lock_waiters_name", "lock_waiters", ["name", "position"])
    op.create_table(
        "rate_buckets",
        sa.Column("key", NAME, primary_key=True),
        sa.Column("tokens", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "health_checks",
        sa.Column("position", POSITION, primary_key=True, autoincrement=True),
        sa.Column("service", NAME, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("available", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("node", NAME, nullable=False),
        sa.Column("time", TIME, nullable=False),
    )
    op.create_index("health_checks_service", "health_checks", ["service", "position"])


def downgrade() -> None:
    for table in ("health_checks", "rate_buckets", "lock_waiters", "lock_holders"):
        op.drop_table(table)
    op.drop_column("works", "waiting")
    op.drop_table("schedules")
    op.drop_table("workers")
    op.drop_index("worker_events_worker", table_name="worker_events")
    op.drop_table("worker_events")
    op.drop_index("leases_owner", table_name="leases")
    op.drop_index("leases_expires", table_name="leases")
    op.drop_table("leases")

"""The first schema: events, works, stage_runs, snapshots.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(64)
POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("position", POSITION, primary_key=True, autoincrement=True),
        sa.Column("work_id", ID, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.String(80), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("time", TIME, nullable=False),
        sa.Column("worker", sa.String(200)),
        sa.UniqueConstraint("work_id", "seq", name="events_work_seq"),
    )
    op.create_table(
        "works",
        sa.Column("work_id", ID, primary_key=True),
        sa.Column("saga", sa.String(200), nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("phase", sa.String(20), nullable=False),
        sa.Column("input", sa.Text),
        sa.Column("output", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("failure", sa.Text),
        sa.Column("current_stage", sa.Text),
        sa.Column("stages_done", sa.Integer, nullable=False),
        sa.Column("stages_total", sa.Integer, nullable=False),
        sa.Column("breakpoints", sa.Text, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("wake_at", TIME),
        sa.Column("parent_work_id", ID),
        sa.Column("forked_at_seq", sa.Integer),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_index("works_status", "works", ["status"])
    op.create_index("works_saga", "works", ["saga"])
    op.create_table(
        "stage_runs",
        sa.Column("work_id", ID, primary_key=True),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("started_at", TIME),
        sa.Column("finished_at", TIME),
        sa.Column("duration", TIME),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "snapshots",
        sa.Column("work_id", ID, primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in ("snapshots", "stage_runs", "works", "events"):
        op.drop_table(table)

"""Deleting finished works: the audit table that outlives them (who deleted which work
of which saga, in what status, when, and why); on SQLite the events table gets
AUTOINCREMENT, so the positions of deleted events are never handed out again (a
subscriber's cursor past them would skip the new ones).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deletions",
        sa.Column("position", POSITION, primary_key=True, autoincrement=True),
        sa.Column("work_id", sa.String(64), nullable=False),
        sa.Column("saga", sa.String(200), nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("deleted_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("deleted_at", sa.Float(precision=53), nullable=False),
        sa.Index("deletions_work", "work_id"),
    )
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("events", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.alter_column("position", existing_type=sa.Integer, autoincrement=True)


def downgrade() -> None:
    op.drop_table("deletions")

"""``work_logs``: what stage code logged through ``ctx.logger``, per work (see
:mod:`engine.worklogs`). A new table only: nodes of the version before keep running
while this one migrates.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "work_logs",
        sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
        sa.Column("work_id", sa.String(64), nullable=False),
        sa.Column("time", sa.Float(precision=53), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("logger", sa.String(200), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("node", sa.String(200)),
    )
    op.create_index("work_logs_work", "work_logs", ["work_id", "position"])


def downgrade() -> None:
    op.drop_table("work_logs")

"""Sagas given as data, and disabled sagas: one row per saga with its JSON (NULL for a
saga registered in code that is only enabled or disabled here), whether it is enabled
(who disabled it, when, why), a version that grows at every change, and who changed
it and when.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "sagas",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("data", sa.Text),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("disabled_by", sa.String(200)),
        sa.Column("disabled_at", TIME),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sagas")

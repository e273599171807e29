"""``messaging_channels``: the messaging pack's channels, their state (active, paused,
deleted) and the counter that hands their messages to each sender in turn (see
:mod:`workers.actions.messaging.channels`). A new table only: nodes of the version
before keep running while this one migrates.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messaging_channels",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("senders", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("turns", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("changed_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("messaging_channels")

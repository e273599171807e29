"""The command inbox: steering requests for a work, recorded by its leaseholder alone;
leases note the last command sent, so a lease handed back with a command waiting is
free at once.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("position", POSITION, primary_key=True, autoincrement=True),
        sa.Column("work_id", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("sender", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("request_id", sa.String(200)),
        sa.Column("sent_at", sa.Float(precision=53), nullable=False),
        sa.UniqueConstraint("work_id", "number", name="commands_work_number"),
        sa.UniqueConstraint("request_id", name="commands_request"),
    )
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("mail", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("mail")
    op.drop_table("commands")

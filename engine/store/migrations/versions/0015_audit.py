"""``audit``: every operator action (who, what, on what, why), listed by the API's
``auditLog`` (see :mod:`engine.store.audit`); ``quota_charges``: the works a client's
quota was charged for, till they end (refunded when no fault of their input ended them,
graphql_api.limits). New tables only: nodes of the version before keep running while
this one migrates.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float(precision=53), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target_kind", sa.String(40), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("audit_target", "audit", ["target_kind", "target", "position"])
    op.create_index("audit_principal", "audit", ["principal", "position"])
    op.create_table(
        "quota_charges",
        sa.Column("work_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("rate", sa.Float(precision=53), nullable=False),
        sa.Column("burst", sa.Float(precision=53), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("charged_at", sa.Float(precision=53), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quota_charges")
    op.drop_table("audit")

"""``audit``: every operator action (who, what, on what, why), listed by the API's
``auditLog`` (see :mod:`engine.store.audit`). A new table only: nodes of the version
before keep running while this one migrates.

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


def downgrade() -> None:
    op.drop_table("audit")

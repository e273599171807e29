"""Leases: the free rows by start time, so an idle node finds when the next delayed
work is due without scanning the leases held by running works; why a free work waits
(its saga is at its concurrency limit).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("leases", sa.Column("waiting", sa.Text))
    op.create_index("leases_due", "leases", ["expires_at"],
                    postgresql_where=sa.text("owner IS NULL"),
                    sqlite_where=sa.text("owner IS NULL"))
    op.create_index("leases_waiting", "leases", ["saga"],
                    postgresql_where=sa.text("waiting IS NOT NULL"),
                    sqlite_where=sa.text("waiting IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("leases_waiting", table_name="leases")
    op.drop_index("leases_due", table_name="leases")
    op.drop_column("leases", "waiting")

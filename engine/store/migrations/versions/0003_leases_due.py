"""The free leases by start time, so an idle node finds when the next delayed work is
due without scanning the leases held by running works.

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
    op.create_index("leases_due", "leases", ["expires_at"],
                    postgresql_where=sa.text("owner IS NULL"),
                    sqlite_where=sa.text("owner IS NULL"))


def downgrade() -> None:
    op.drop_index("leases_due", table_name="leases")

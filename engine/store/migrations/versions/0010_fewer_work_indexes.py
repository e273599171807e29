"""Two indexes of ``works`` fewer: ``works_status`` and ``works_saga`` are the leading
columns of ``works_status_created`` and ``works_saga_created``, which serve the same
lookups; every index of ``works`` costs each commit of a work a write.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("works_status", table_name="works")
    op.drop_index("works_saga", table_name="works")


def downgrade() -> None:
    op.create_index("works_saga", "works", ["saga"])
    op.create_index("works_status", "works", ["status"])

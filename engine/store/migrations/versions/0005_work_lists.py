"""Indexes for lists of works: newest first, overall and by saga.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("works_created", "works", ["created_at", "work_id"])
    op.create_index("works_saga_created", "works", ["saga", "created_at", "work_id"])


def downgrade() -> None:
    op.drop_index("works_saga_created", table_name="works")
    op.drop_index("works_created", table_name="works")

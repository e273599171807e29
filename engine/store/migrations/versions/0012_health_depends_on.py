"""``health_checks.depends_on``: the services a service depended on when it was
checked (a JSON list), so the health graph can be drawn from the store alone, as the
node that checked it knew it. Older rows have none (NULL: not known).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("health_checks", sa.Column("depends_on", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("health_checks") as batch:
        batch.drop_column("depends_on")

"""The catalog: the definition of each saga every worker node runs (its description,
hash and version); the definition a work started on, on its lease row (so a node
claims only works its definitions continue) and in the works list (its version
beside the hash 0006 added).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "catalog",
        sa.Column("node", sa.String(200), primary_key=True),
        sa.Column("saga", sa.String(200), primary_key=True),
        sa.Column("definition", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("published_at", TIME, nullable=False),
        sa.Column("seen_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
    )
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("definition", sa.String(64)))
        batch.add_column(sa.Column("definition_version", sa.Integer))
    with op.batch_alter_table("works") as batch:
        batch.add_column(sa.Column("definition_version", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("works") as batch:
        batch.drop_column("definition_version")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("definition_version")
        batch.drop_column("definition")
    op.drop_table("catalog")

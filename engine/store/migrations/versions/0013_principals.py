"""People and machines: ``principals`` in groups (``group_members``), their API tokens,
sessions and one-time login links (``credentials``, each secret kept only as a hash),
and the deployment's ``settings`` (its id, named by every token it issues).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("principal_id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("email", sa.String(320)),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("disabled_at", sa.Float(precision=53)))
    op.create_table(
        "group_members",
        sa.Column("group_name", sa.String(200), primary_key=True),
        sa.Column("principal_id", sa.String(40),
                  sa.ForeignKey("principals.principal_id", ondelete="CASCADE"),
                  primary_key=True))
    op.create_index("group_members_principal", "group_members", ["principal_id"])
    op.create_table(
        "credentials",
        sa.Column("credential_id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("principal_id", sa.String(40),
                  sa.ForeignKey("principals.principal_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("expires_at", sa.Float(precision=53), nullable=False),
        sa.Column("revoked_at", sa.Float(precision=53)),
        sa.Column("csrf_hash", sa.String(64)))
    op.create_index("credentials_principal", "credentials", ["principal_id", "kind"])
    op.create_table(
        "settings",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False))


def downgrade() -> None:
    op.drop_table("settings")
    op.drop_index("credentials_principal", "credentials")
    op.drop_table("credentials")
    op.drop_index("group_members_principal", "group_members")
    op.drop_table("group_members")
    op.drop_table("principals")

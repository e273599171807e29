"""The users pack's people on ``principals``: a phone, a password hash (argon2id), a
state (pending until the email is confirmed, active, disabled) and when each was
confirmed (see :mod:`workers.actions.users.accounts`). New nullable columns only (the
state defaults to active for the principals there are): nodes of the version before
keep running while this one migrates.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_COLUMNS = ("phone", "password_hash", "state", "updated_at", "confirmed_at",
            "phone_confirmed_at")


def upgrade() -> None:
    with op.batch_alter_table("principals") as table:
        table.add_column(sa.Column("phone", sa.String(32)))
        table.add_column(sa.Column("password_hash", sa.String(255)))
        table.add_column(sa.Column("state", sa.String(20), nullable=False,
                                   server_default="active"))
        table.add_column(sa.Column("updated_at", sa.Float(precision=53)))
        table.add_column(sa.Column("confirmed_at", sa.Float(precision=53)))
        table.add_column(sa.Column("phone_confirmed_at", sa.Float(precision=53)))


def downgrade() -> None:
    with op.batch_alter_table("principals") as table:
        for name in reversed(_COLUMNS):
            table.drop_column(name)

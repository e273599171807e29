"""``works.commands_applied``: the number of the last inbox command a work took, so a
list of works shows their pending commands in one query (the commands above it).
Existing works get theirs from their ``work.command`` events (a fork's inherited ones,
its origin's numbers, do not count).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("works", sa.Column("commands_applied", sa.Integer, nullable=False,
                                     server_default="0"))
    conn = op.get_bind()
    applied: dict[str, int] = {}
    for work_id, payload in conn.execute(sa.text(
            "SELECT work_id, payload FROM events WHERE type = 'work.command'")):
        data = json.loads(payload)
        number = data.get("number")
        if isinstance(number, int) and not data.get("inherited"):
            applied[work_id] = max(applied.get(work_id, 0), number)
    update = sa.text("UPDATE works SET commands_applied = :n WHERE work_id = :w")
    for work_id, number in applied.items():
        conn.execute(update, {"n": number, "w": work_id})


def downgrade() -> None:
    with op.batch_alter_table("works") as batch:
        batch.drop_column("commands_applied")

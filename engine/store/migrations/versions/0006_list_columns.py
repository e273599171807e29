"""What lists of works and stages show: a work's priority, start, end and duration, the
type of the error that ended it, the node and worker that ran it, the hash of its
definition; a stage run's saga and template path (``pack[*]/box``), indexed so one
stage is listed across works. Rows written before this revision get the values as
their works move on, or all at once from ``SqlStore.rebuild_projections()``.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


def upgrade() -> None:
    with op.batch_alter_table("works") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("started_at", TIME))
        batch.add_column(sa.Column("finished_at", TIME))
        batch.add_column(sa.Column("duration", TIME))
        batch.add_column(sa.Column("error_type", sa.String(200)))
        batch.add_column(sa.Column("worker", sa.String(200)))
        batch.add_column(sa.Column("node", sa.String(200)))
        batch.add_column(sa.Column("definition", sa.String(64)))
    op.create_index("works_saga_status_created", "works",
                    ["saga", "status", "created_at", "work_id"])
    op.create_index("works_status_created", "works", ["status", "created_at", "work_id"])
    with op.batch_alter_table("stage_runs") as batch:
        batch.add_column(sa.Column("saga", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("template", sa.Text, nullable=False, server_default=""))
    op.create_index("stage_runs_template", "stage_runs", ["saga", "template"])


def downgrade() -> None:
    op.drop_index("stage_runs_template", table_name="stage_runs")
    with op.batch_alter_table("stage_runs") as batch:
        batch.drop_column("template")
        batch.drop_column("saga")
    op.drop_index("works_status_created", table_name="works")
    op.drop_index("works_saga_status_created", table_name="works")
    with op.batch_alter_table("works") as batch:
        for name in ("definition", "node", "worker", "error_type", "duration", "finished_at",
                     "started_at", "priority"):
            batch.drop_column(name)

"""exchange: Bulk Data export jobs

One row per `$export` kick-off: what was asked and by whom, where it stands (accepted,
in-progress, completed, failed, cancelled), the manifest once done. Workers claim
accepted jobs, and in-progress ones whose lease ran out (a worker that died), with
`FOR UPDATE SKIP LOCKED`.

Revision ID: 0009_exchange
Revises: 0004_search
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009_exchange"
down_revision: str | None = "0010_subscriptions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "export_job",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("params", JSONB(), nullable=False),
        sa.Column("principal", JSONB(), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("lease_until", TS),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("progress", sa.Text()),
        sa.Column("transaction_time", TS),
        sa.Column("manifest", JSONB()),
        sa.Column("error", sa.Text()),
        sa.Column("expires_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_export_job"),
    )
    op.create_index("ix_export_job_status_created_at", "export_job", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("export_job")
